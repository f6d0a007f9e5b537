"""Work handed off when a transaction commits, and dropped when it does not.

``schedule(manager, on_commit, on_drop)`` ties a hand-off (a job to queue,
a worker to start) to the current transaction of ``manager``:
``on_commit()`` runs once that transaction has committed, ``on_drop()``
when it aborts, or when a savepoint taken before the call is rolled back.
Exactly one of the two is called.

The transaction package's after-commit hooks know nothing of savepoints,
so the hand-offs ride on a data manager of their own that joins the
transaction, sorts after every storage, acts in ``tpc_finish`` (when all
storages have finished their commit), and takes part in savepoints.
"""
import logging

from transaction.interfaces import NoTransaction

from cipher.background._datamanager import LastDataManager
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError

log = logging.getLogger(__name__)

_KEY = object()  # the key of the pending hand-offs in Transaction.data()


def current_transaction(manager):
    """The transaction of ``manager`` that a hand-off will wait for.

    ArgumentTypeError for something that is no transaction manager;
    ConfigurationError for an explicit manager with no transaction begun
    (nothing would ever commit it)."""
    if not callable(getattr(manager, 'get', None)):
        raise ArgumentTypeError(
            'expected a transaction manager (such as transaction.manager, '
            'or the transaction_manager of your connection), not %r'
            % (manager,))
    try:
        return manager.get()
    except NoTransaction:
        raise ConfigurationError(
            'the explicit transaction manager %r has no transaction begun, '
            'so no commit would ever release this work; ask for it inside '
            'the request\'s transaction (after manager.begin()), or run it '
            'at once' % (manager,)) from None


def schedule(manager, on_commit, on_drop):
    """Call ``on_commit()`` after the current transaction of ``manager``
    commits; ``on_drop()`` if it aborts or the savepoint it was scheduled
    after is rolled back.  Neither may raise (errors are logged).  Raises
    what :func:`current_transaction` raises, before anything is
    scheduled."""
    txn = current_transaction(manager)
    try:
        pending = txn.data(_KEY)
    except KeyError:
        pending = _PendingHandOffs(manager)
        txn.set_data(_KEY, pending)
    pending.add(txn, on_commit, on_drop)


def _call(fn, what):
    try:
        fn()
    except Exception:
        log.exception('Could not %s background work', what)


class _PendingHandOffs(LastDataManager):
    """The data manager holding one transaction's hand-offs."""

    name = 'hand-offs'

    def __init__(self, manager):
        super().__init__(manager)
        self.items = []
        self.joined = False

    def add(self, txn, on_commit, on_drop):
        if not self.joined:
            txn.join(self)
            self.joined = True
        self.items.append((on_commit, on_drop))

    def _drop_from(self, index):
        dropped, self.items[index:] = self.items[index:], []
        for _, on_drop in dropped:
            _call(on_drop, 'drop')

    def abort(self, txn):
        # Also what a rolled-back savepoint taken before this data manager
        # joined does: everything here came after it.
        self.joined = False
        self._drop_from(0)

    tpc_abort = abort

    def tpc_finish(self, txn):
        items, self.items = self.items, []
        for on_commit, _ in items:
            _call(on_commit, 'hand off')

    def savepoint(self):
        return _Savepoint(self, len(self.items))


class _Savepoint:
    def __init__(self, pending, index):
        self.pending = pending
        self.index = index

    def rollback(self):
        self.pending._drop_from(self.index)
