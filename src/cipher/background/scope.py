"""Entering and leaving a unit of work in a thread.

A :class:`Scope` begins the thread's transaction, opens a connection (or
takes the one a :class:`ConnectionSlot` kept from the runner's last
unit), sets the site and begins the interaction for the principal; on the
way out it restores all of it in reverse order.  It refuses a thread that
is busy with other work (:func:`check_thread_idle`) rather than touch it.

While a unit runs, :func:`current_connection` gives its connection, and
a :class:`CommitWatch` joined to its transaction makes sure the unit
alone commits it.
"""
import contextvars

import transaction
from transaction.interfaces import NoTransaction
from transaction.interfaces import TransientError
from zope.component import hooks

from cipher.background import security
from cipher.background._datamanager import LastDataManager
from cipher.background.errors import DatabaseClosed
from cipher.background.errors import NotInUnit
from cipher.background.errors import ThreadBusy
from cipher.background.errors import UnitTransactionEnded
from cipher.background.sites import is_site


#: The Scope of the unit running in this thread (or task), if any.
_current_scope = contextvars.ContextVar('cipher.background.scope',
                                        default=None)


def current_scope():
    """The Scope of the running unit of work; NotInUnit outside one."""
    scope = _current_scope.get()
    if scope is None:
        raise NotInUnit(
            'this works only inside a running unit of work (a worker\'s '
            'doWork() or doCleanup(), or a job)')
    return scope


def in_unit():
    """True inside a running unit of work in this thread."""
    return _current_scope.get() is not None


def current_connection():
    """The ZODB connection of the running unit of work (a worker's unit or
    a job): what user code loads objects with when it has no site or
    persistent argument to start from.  NotInUnit outside one."""
    return current_scope().connection


def current_user_id():
    """The principal id the running unit of work (a worker's unit or a
    job) runs for: the user who asked for it, SYSTEM, or None where no
    user was named.  NotInUnit outside one."""
    return current_scope().principal_id


def renew_transaction():
    """Inside a unit: abort its transaction and begin a new one with the
    same user and note, for a fresh view of the database (what
    :func:`cipher.background.wait_for` does between tries).  Everything the
    unit wrote so far is discarded."""
    current_scope()._renew()


def transaction_in_progress(manager=None):
    """True when ``manager`` (default: the thread's) has a transaction
    begun and not yet committed or aborted.

    Asked through explicit mode, the public way: there ``get()`` raises
    NoTransaction instead of beginning one.
    """
    # The thread's own manager: its attributes are plain ones, cheaper
    # than the per-thread front's properties.
    manager = manager or transaction.manager.manager
    explicit = manager.explicit
    manager.explicit = True
    try:
        manager.get()
    except NoTransaction:
        return False
    finally:
        manager.explicit = explicit
    return True


def check_thread_idle(what='background work'):
    """Raise ThreadBusy, touching nothing, when this thread has a local
    site, an interaction or a transaction in progress."""
    busy = []
    if hooks.getSite() is not None:
        busy.append('a local site is set')
    if security.interaction_active():
        busy.append('a security interaction is active')
    if transaction_in_progress():
        busy.append('a transaction is in progress')
    if busy:
        raise ThreadBusy(
            'cannot run %s in this thread: %s. A unit of work never touches '
            "its caller's work: commit or abort the transaction, end the "
            'interaction and reset the site first (or run it in a thread of '
            'its own with start() or perform())' % (what, ', '.join(busy)))


def _open(db):
    try:
        return db.open()
    except TransientError:
        raise  # a server that is away: the retry policy decides
    except Exception as exc:
        raise DatabaseClosed(
            'cannot open a connection to %r (%s: %s): the database was '
            'closed, so no unit can run; open it again and start new '
            'workers' % (db, type(exc).__name__, exc)) from exc


def _ensure_hooks():
    """Make component lookups consult the current site (what
    ``hooks.setHooks()`` does; asked first because it is set once per
    process and cleared only by test tear-downs)."""
    from zope.component import getSiteManager
    if getSiteManager.implementation is not hooks.getSiteManager:
        hooks.setHooks()


class ConnectionSlot:
    """One connection kept open between back-to-back units of one thread.

    A runner that runs unit after unit passes its slot to
    :meth:`UnitOfWork.run`, which reuses the connection instead of
    opening a new one per unit.  The runner calls :meth:`release` when it
    is about to wait for work, after a failure, and when it ends.
    """

    __slots__ = ('connection',)

    def __init__(self):
        self.connection = None

    def acquire(self, db):
        """The open connection to ``db``, opened now if there is none."""
        connection = self.connection
        if connection is None or connection.db() is not db:
            self.release()
            connection = self.connection = _open(db)
        return connection

    def release(self):
        """Close the kept connection, if any."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


class Scope:
    """An entered unit of work: ``connection``, ``site`` and ``principal``
    for the code inside the ``with`` block; see :meth:`UnitOfWork.entered`.

    Entering begins the thread's transaction, then opens the connection,
    sets the site and starts the interaction.
    Leaving restores the thread in reverse order of setting: the
    transaction (aborted if still in progress), the interaction, the site,
    then the connection (closed, or kept in the slot).
    """

    connection = site = principal = principal_id = None

    def __init__(self, unit_of_work, on_error=None, slot=None,
                 principal_optional=False):
        self._unit_of_work = unit_of_work
        self._on_error = on_error
        self._slot = slot
        self._principal_optional = principal_optional
        self._site_set = False
        self._security_set = False
        self._security = None  # the host's token for end_security()
        self._token = None
        self._attempt = None  # (txn, watch) of the running attempt
        self._ended = False   # the attempt committed or aborted its txn

    def _renew(self):
        txn, watch = self._attempt
        watch.ours = True  # this abort is the unit's own
        manager = transaction.manager
        manager.abort()
        new = manager.begin()
        new.user, new.description = txn.user, txn.description
        new_watch = CommitWatch(manager)
        new.join(new_watch)
        self._attempt = (new, new_watch)

    def __enter__(self):
        uow = self._unit_of_work
        # Begin first: RelStorage and ZEO read the snapshot begin() syncs.
        transaction.manager.begin()
        try:
            if self._slot is None:
                self.connection = _open(uow.db)
            else:
                self.connection = self._slot.acquire(uow.db)
        except BaseException as exc:
            transaction.abort()
            if self._on_error is not None and isinstance(exc, Exception):
                self._on_error(exc)
            raise
        # Current from here on: getSite()/getPrincipal() overrides may ask
        # for the connection and the site.
        self._token = _current_scope.set(self)
        try:
            host = uow.host
            self.site = uow.getSite(self.connection)
            # A plain persistent root (Pyramid) is the work's site without
            # being a zope.component one: nothing to set then.
            if self.site is not None and is_site(self.site):
                _ensure_hooks()
                hooks.setSite(self.site)
                self._site_set = True
            self.principal_id = uow.principal_id
            try:
                self.principal = uow.getPrincipal(uow.principal_id,
                                                  self.site)
                host.check_principal(self.principal, uow.principal_id)
            except Exception:
                if not self._principal_optional:
                    raise
            else:
                self._security = host.begin_security(self.principal)
                self._security_set = True
        except BaseException as exc:
            self._leave(exc)
            raise
        return self

    def __exit__(self, exc_type, exc, traceback):
        self._leave(exc)
        return False

    def _leave(self, exc):
        if self._token is not None:
            _current_scope.reset(self._token)
            self._token = None
        try:
            if self._on_error is not None and isinstance(exc, Exception):
                self._on_error(exc)  # the connection is still open
        finally:
            try:
                if not self._ended and transaction_in_progress():
                    transaction.abort()
            finally:
                if self._security_set:
                    self._security_set = False
                    token, self._security = self._security, None
                    self._unit_of_work.host.end_security(token)
                if self._site_set:
                    self._site_set = False
                    hooks.setSite(None)
                if self._slot is None or exc is not None:
                    if self._slot is not None:
                        self._slot.connection = None
                    self.connection.close()


class CommitWatch(LastDataManager):
    """A data manager joined to each attempt's transaction, sorting after
    every storage.

    It refuses a commit that user code starts (the unit commits its
    transaction once, itself), notes an abort by user code, and knows
    whether the commit got past the vote: after that, a failure leaves
    the outcome unknown.
    """

    name = 'commit watch'

    def __init__(self, manager):
        super().__init__(manager)
        self.ours = self.voted = self.aborted = self.refused = False

    def tpc_begin(self, txn):
        if not self.ours:
            self.refused = True
            raise UnitTransactionEnded(
                "the unit's transaction was committed by the code it runs; "
                'a unit commits once, itself, with its user and note, and '
                'retries whole on conflicts. Do not call '
                'transaction.commit() in doWork() or a job: use '
                'transaction.savepoint() for partial rollbacks, and smaller '
                'units for partial progress')

    def abort(self, txn):
        if not self.ours:
            self.aborted = True

    def tpc_vote(self, txn):
        self.voted = True


def ended_by_user_code():
    return UnitTransactionEnded(
        "the unit's transaction was aborted or replaced by the code it "
        'runs (transaction.abort() or begin()); later writes would go '
        'unnoted and a retry could not undo them, so the unit failed. '
        'Raise an exception to give a unit up, or use '
        'transaction.savepoint() to undo part of it')
