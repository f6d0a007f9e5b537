"""The unit-of-work context: the footing a request had, rebuilt in a runner.

A :class:`UnitOfWork` is captured where work is asked for (a view, a
start-up subscriber, a script) and holds only picklable references: the
database, the site's OID and the principal's id.  A runner (a worker
thread, a pool thread) runs user code in it::

    connection -> site -> interaction for the principal -> transaction
    -> user code -> commit -> transaction, interaction, site, connection

Every attempt enters the whole footing afresh, so a transient error on the
way in (a storage server that is away) is retried by the same policy as a
conflict in the body.  A failure after the vote is never retried: the
commit may have happened (:class:`OutcomeUnknown`).

The runner's thread must be idle: a unit never touches a caller's site,
interaction or transaction; it refuses (:class:`ThreadBusy`) instead.
"""
import contextvars

import transaction
from transaction.interfaces import NoTransaction
from transaction.interfaces import TransientError
from ZODB.POSException import POSKeyError
from zope.component import hooks
from zope.component.interfaces import ISite
from zope.interface import implementer

from cipher.background import security
from cipher.background.errors import ConfigurationError
from cipher.background.errors import DatabaseClosed
from cipher.background.errors import Interrupted
from cipher.background.errors import NotASite
from cipher.background.errors import NotInUnit
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import RetriesExhausted
from cipher.background.errors import SiteNotFound
from cipher.background.errors import ThreadBusy
from cipher.background.errors import UnitTransactionEnded
from cipher.background.interfaces import IUnitOfWork
from cipher.background.retry import DEFAULT_POLICY
from cipher.background.security import Participation  # noqa: F401 (API)
from cipher.background.security import current_principal_id  # noqa: F401
from cipher.background.security import lookup_principal


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


def renew_transaction():
    """Inside a unit: abort its transaction and begin a new one with the
    same user and note, for a fresh view of the database (what
    :func:`cipher.background.wait_for` does between tries).  Everything the
    unit wrote so far is discarded."""
    current_scope()._renew()


def database_identity(obj, what='object'):
    """Return ``(db, oid)`` of a stored persistent object, or raise
    ConfigurationError saying why it has none."""
    jar = getattr(obj, '_p_jar', None)
    oid = getattr(obj, '_p_oid', None)
    if jar is None or oid is None:
        raise ConfigurationError(
            'the %s %r is not stored in a ZODB database (it has no _p_jar '
            'or _p_oid); add it to the database and commit before handing '
            'it to background work' % (what, obj))
    return jar.db(), oid


def is_site(obj):
    """True for a zope.component site, and for any object with a
    ``getSiteManager()`` method (what cipher.background 2.0 accepted)."""
    return ISite.providedBy(obj) or callable(
        getattr(obj, 'getSiteManager', None))


def not_a_site_message(obj):
    return ('%r is not a site (it has no local site manager); pass the '
            'site itself, or make it a site first (zope.site: '
            'setSiteManager(LocalSiteManager(obj)); Zope 2/5: '
            'Products.Five.component.enableSite or "Make site" in the ZMI)'
            % (obj,))


def load_site(connection, site_oid):
    """Load the site ``site_oid`` in ``connection``; raise SiteNotFound or
    NotASite when it is not there or not a site."""
    try:
        site = connection.get(site_oid)
    except (POSKeyError, KeyError):
        raise SiteNotFound(
            'no object with OID %r in the database: the site was removed or '
            'never committed; start background work only after the '
            "transaction that adds the site commits (use "
            'startAfterCommit())' % (site_oid,)) from None
    if not is_site(site):
        raise NotASite(not_a_site_message(site))
    return site


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


def check_retry_policy(policy):
    """ConfigurationError unless ``policy`` is None or an IRetryPolicy."""
    if policy is not None and not all(
            callable(getattr(policy, name, None))
            for name in ('isTransient', 'begin')):
        raise ConfigurationError(
            'retry_policy must be an IRetryPolicy (such as '
            'RetryPolicy(attempts=10)), not %r' % (policy,))


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

    connection = site = principal = None

    def __init__(self, unit_of_work, on_error=None, slot=None,
                 principal_optional=False):
        self._unit_of_work = unit_of_work
        self._on_error = on_error
        self._slot = slot
        self._principal_optional = principal_optional
        self._site_set = self._interaction_set = False
        self._participation = None
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
        new_watch = _CommitWatch(manager)
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
        try:
            self.site = uow.getSite(self.connection)
            if self.site is not None:
                _ensure_hooks()
                hooks.setSite(self.site)
                self._site_set = True
            try:
                self.principal = uow._getPrincipal(uow.principal_id)
            except Exception:
                if not self._principal_optional:
                    raise
            else:
                self._participation = security.begin_interaction(
                    self.principal)
                self._interaction_set = True
        except BaseException as exc:
            self._leave(exc)
            raise
        self._token = _current_scope.set(self)
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
                if self._interaction_set:
                    self._interaction_set = False
                    security.end_interaction(self._participation)
                if self._site_set:
                    self._site_set = False
                    hooks.setSite(None)
                if self._slot is None or exc is not None:
                    if self._slot is not None:
                        self._slot.connection = None
                    self.connection.close()


class _CommitWatch:
    """A data manager joined to each attempt's transaction, sorting after
    every storage.

    It refuses a commit that user code starts (the unit commits its
    transaction once, itself), notes an abort by user code, and knows
    whether the commit got past the vote: after that, a failure leaves
    the outcome unknown.
    """

    def __init__(self, manager):
        self.transaction_manager = manager
        self.ours = self.voted = self.aborted = False

    def sortKey(self):
        return '\U0010ffff cipher.background commit watch'

    def tpc_begin(self, txn):
        if not self.ours:
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

    def commit(self, txn):
        pass

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass

    def savepoint(self):
        return self

    def rollback(self):  # the savepoint of this data manager
        pass


def _ended_by_user_code():
    return UnitTransactionEnded(
        "the unit's transaction was aborted or replaced by the code it "
        'runs (transaction.abort() or begin()); later writes would go '
        'unnoted and a retry could not undo them, so the unit failed. '
        'Raise an exception to give a unit up, or use '
        'transaction.savepoint() to undo part of it')


@implementer(IUnitOfWork)
class UnitOfWork:
    """Database, site and principal by reference; entered in a runner.

    ``site_oid`` may be None (no local site is set).  ``principal_id`` is
    a principal id, :data:`~cipher.background.security.SYSTEM` to run
    unchecked on purpose, or None where no security machinery is
    reachable (see :func:`~cipher.background.security.lookup_principal`).
    ``getSite(connection)`` and ``getPrincipal(principal_id)`` are
    override points.
    """

    def __init__(self, db, site_oid=None, principal_id=None,
                 retry_policy=None, getSite=None, getPrincipal=None):
        if not callable(getattr(db, 'open', None)):
            raise ConfigurationError(
                'expected a ZODB database (an object with open()), got %r; '
                'pass connection.db() or the DB you opened' % (db,))
        check_retry_policy(retry_policy)
        security.check_principal_id(principal_id)
        self.db = db
        self.site_oid = site_oid
        self.principal_id = principal_id
        self.retry_policy = retry_policy or DEFAULT_POLICY
        self._getSite = getSite
        self._getPrincipal = getPrincipal or lookup_principal

    @classmethod
    def capture(cls, site=None, db=None, user=None, **kw):
        """Capture the caller's context: the database and site from
        ``site`` (default: the current local site), the principal id from
        ``user`` (default: the current interaction's principal).

        PrincipalRequired when no user is named or found and the site
        checks security.
        """
        if site is None:
            site = hooks.getSite()
        site_oid = None
        if site is not None:
            site_db, site_oid = database_identity(site, 'site')
            if db is not None and db is not site_db:
                raise ConfigurationError(
                    'db= and site= name different databases; pass one')
            db = site_db
        if db is None:
            raise ConfigurationError(
                'cannot tell which database to use: there is no current '
                'stored site; pass db= (and site=) explicitly')
        if user is None:
            user = security.current_principal_id()
        security.check_user_for_site(user, site)
        return cls(db, site_oid, user, **kw)

    def getSite(self, connection):
        """The site object in ``connection``, or None when there is none."""
        if self._getSite is not None:
            return self._getSite(connection)
        if self.site_oid is None:
            return None
        return load_site(connection, self.site_oid)

    def entered(self, on_error=None, slot=None, principal_optional=False,
                runner_thread=False):
        """Open a connection (or take the one kept in ``slot``), set the
        site, start the interaction: a context manager whose value is the
        :class:`Scope`.

        ThreadBusy, before anything is touched, when this thread has a
        site, an interaction or a transaction in progress.
        ``on_error(exc)`` is called for an exception leaving the block (or
        raised on the way in) while the connection is still open, before
        the exception propagates.  With ``principal_optional`` a principal
        that cannot be found leaves the block with no interaction at all
        (so checked code fails closed) instead of raising.
        ``runner_thread`` says the caller is the runner that owns this
        thread (a worker's loop, a pool thread), which leaves it idle
        after every unit: the busy-thread check is skipped.
        """
        if not runner_thread:
            check_thread_idle()
        return Scope(self, on_error, slot, principal_optional)

    def attempt(self, fn, note=None, user=None):
        """Inside :meth:`entered`: run ``fn()`` in the transaction the scope
        began, with that note and user, and commit it; return ``fn``'s
        result.  Once per ``entered()``.

        One attempt, no retry.  On failure the transaction is aborted and
        the error raised: what ``fn`` or the commit raised,
        UnitTransactionEnded when ``fn`` committed, aborted or began the
        transaction itself, OutcomeUnknown when the commit failed after
        the vote.
        """
        return self._attempt(current_scope(), fn, note, user,
                             _Outcome(self.retry_policy))

    def _attempt(self, scope, fn, note, user, outcome):
        if user is None:
            user = self.principal_id
        manager = transaction.manager
        txn = manager.get()
        # As txn.setUser(user, '/') and txn.note(note) would, cheaper.
        txn.user = '/ %s' % user if user else ''
        txn.description = note.strip() if note else ''
        watch = _CommitWatch(manager)
        txn.join(watch)
        scope._attempt = (txn, watch)
        try:
            result = fn()
            txn, watch = scope._attempt  # renew_transaction() may change it
            if watch.aborted or manager.get() is not txn:
                raise _ended_by_user_code()
            watch.ours = True
            scope._ended = True  # committed, or aborted below
            txn.commit()
        except BaseException as error:
            scope._ended = True
            watch = scope._attempt[1]
            if watch.voted:
                outcome.transient = False
                manager.abort()
                raise OutcomeUnknown(note or 'a unit of work', error) \
                    from error
            # Asked before abort(): data managers that joined the
            # transaction vote through should_retry() and leave on abort.
            outcome.transient = (isinstance(error, Exception)
                                 and outcome.policy.isTransient(error,
                                                                manager))
            manager.abort()
            raise
        return result

    def run(self, fn, note=None, user=None, stop_event=None, on_retry=None,
            on_error=None, slot=None, principal_optional=False,
            runner_thread=False):
        """Run ``fn()`` once, committed, in this context: enter, attempt,
        leave; on a transient error (on the way in, in ``fn`` or in the
        commit before the vote) leave, wait the policy's backoff and run it
        all again.

        ``on_error(exc)`` sees an error that ends the run (not one that is
        retried) while the connection is still open.
        ``on_retry(attempt_number, error, delay)`` is told before each
        wait; the wait ends early with Interrupted when ``stop_event`` is
        set.  RetriesExhausted when the policy gives up; OutcomeUnknown
        (never retried) when a commit failed after the vote; any other
        error propagates.  Nothing is held during a wait: the connection
        is closed (a ``slot`` is emptied) and the thread is idle.
        ``slot`` and ``runner_thread`` are passed to :meth:`entered`.
        """
        policy = self.retry_policy
        attempts = None  # the retry bookkeeping, from the first failure on
        while True:
            outcome = _Outcome(policy, on_error)
            try:
                with self.entered(on_error=outcome.report, slot=slot,
                                  principal_optional=principal_optional,
                                  runner_thread=runner_thread) as scope:
                    return self._attempt(scope, fn, note, user, outcome)
            except Exception as error:
                if not outcome.is_transient(error):
                    raise
                if attempts is None:
                    attempts = policy.begin()
                try:
                    delay = attempts.backoff(error)
                except RetriesExhausted as exhausted:
                    if on_error is not None:
                        on_error(exhausted)
                    raise
                last_error = error
            if on_retry is not None:
                on_retry(attempts.number, last_error, delay)
            if attempts.wait(delay, stop_event):
                raise Interrupted(
                    'stopped while waiting to retry after %s: %s' % (
                        type(last_error).__name__, last_error)
                ) from last_error


class _Outcome:
    """Whether one attempt's error is transient: decided inside the
    transaction (before its abort) when the error came from there, by the
    policy alone when it came on the way in."""

    __slots__ = ('policy', 'on_error', 'transient')

    def __init__(self, policy, on_error=None):
        self.policy = policy
        self.on_error = on_error
        self.transient = None

    def is_transient(self, error):
        if isinstance(error, OutcomeUnknown):
            return False
        if self.transient is None:
            self.transient = self.policy.isTransient(error)
        return self.transient

    def report(self, error):
        """Hand ``error`` to ``on_error`` unless it will be retried."""
        if self.on_error is not None and not self.is_transient(error):
            self.on_error(error)
