"""The base of the library's own data managers: they take part in a
transaction's two-phase commit without storing anything, sorting after
every storage (so their ``tpc_vote`` comes after all other votes and
their ``tpc_finish`` after all other commits), and each phase does
nothing until a subclass says otherwise."""


class LastDataManager:
    """An IDataManager that stores nothing and sorts after every storage.

    Subclasses override the phases they act in; ``name`` makes the sort
    key unique among them.
    """

    name = 'cipher.background'

    def __init__(self, manager):
        self.transaction_manager = manager

    def sortKey(self):
        return '\U0010ffff ' + self.name

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        pass

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass

    def savepoint(self):
        return _NothingToRollBack


class _NothingToRollBack:
    @staticmethod
    def rollback():
        pass
