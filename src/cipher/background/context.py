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
import transaction
from zope.interface import implementer

from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import RetriesExhausted
from cipher.background.host import caller_site
from cipher.background.host import check_host
from cipher.background.host import get_host
from cipher.background.host import load_site
from cipher.background.interfaces import IUnitOfWork
from cipher.background.retry import DEFAULT_POLICY
from cipher.background.scope import CommitWatch
from cipher.background.scope import ConnectionSlot
from cipher.background.scope import Scope
from cipher.background.scope import check_thread_idle
from cipher.background.scope import current_connection
from cipher.background.scope import current_scope
from cipher.background.scope import current_user_id
from cipher.background.scope import ended_by_user_code
from cipher.background.scope import in_unit
from cipher.background.scope import renew_transaction
from cipher.background.security import Participation
from cipher.background.security import check_principal_id
from cipher.background.security import current_principal_id
from cipher.background.security import lookup_principal
from cipher.background.sites import database_identity
from cipher.background.sites import is_site
from cipher.background.sites import not_a_site_message

# The names of the unit-of-work context, wherever they are defined.
__all__ = ['UnitOfWork', 'Scope', 'ConnectionSlot', 'Participation',
           'check_retry_policy', 'check_thread_idle', 'current_connection',
           'current_principal_id', 'current_scope', 'current_user_id',
           'database_identity',
           'in_unit', 'is_site', 'load_site', 'lookup_principal',
           'not_a_site_message', 'renew_transaction']


def check_retry_policy(policy):
    """ConfigurationError unless ``policy`` is None or an IRetryPolicy."""
    if policy is not None and not all(
            callable(getattr(policy, name, None))
            for name in ('isTransient', 'begin')):
        raise ConfigurationError(
            'retry_policy must be an IRetryPolicy (such as '
            'RetryPolicy(attempts=10)), not %r' % (policy,))


@implementer(IUnitOfWork)
class UnitOfWork:
    """Database, site and principal by reference; entered in a runner.

    ``site_oid`` may be None (no local site is set).  ``principal_id`` is
    a principal id, :data:`~cipher.background.security.SYSTEM` to run
    unchecked on purpose, or None where no security machinery is
    reachable (see :func:`~cipher.background.security.lookup_principal`).
    ``getSite(connection)`` and ``getPrincipal(principal_id)`` are
    override points.  ``host`` (an IHost; default: the current one, see
    :mod:`cipher.background.host`) finds the site and the principal and
    sets the host's security in the runner.
    """

    def __init__(self, db, site_oid=None, principal_id=None,
                 retry_policy=None, getSite=None, getPrincipal=None,
                 host=None, site_hint=None):
        if not callable(getattr(db, 'open', None)):
            raise ConfigurationError(
                'expected a ZODB database (an object with open()), got %r; '
                'pass connection.db() or the DB you opened' % (db,))
        check_retry_policy(retry_policy)
        check_principal_id(principal_id)
        current = get_host()
        if host is not None and host is not current:  # current: checked
            check_host(host)
        self.host = host or current
        self.db = db
        self.site_oid = site_oid
        self.site_hint = site_hint
        self.principal_id = principal_id
        self.retry_policy = retry_policy or DEFAULT_POLICY
        self._getSite = getSite
        self._getPrincipal = getPrincipal

    @classmethod
    def capture(cls, site=None, db=None, user=None, host=None, **kw):
        """Capture the caller's context: the database and site from
        ``site`` (default: the host's current site), the principal id from
        ``user`` (default: the host's current user).

        PrincipalRequired when no user is named or found and the site
        checks security.
        """
        host = host or get_host()
        if site is None:
            site = host.current_site()
        db, site_oid, site_hint = caller_site(host, site, db)
        if db is None:
            raise ConfigurationError(
                'cannot tell which database to use: there is no current '
                'stored site; pass db= (and site=) explicitly')
        if user is None:
            user = host.current_user()
        host.check_user(user, site)
        return cls(db, site_oid, user, host=host, site_hint=site_hint, **kw)

    def getPrincipal(self, principal_id, site):
        """The principal the work runs as (the ``getPrincipal`` override,
        else the host's), with ``site`` loaded."""
        if self._getPrincipal is not None:
            return self._getPrincipal(principal_id)
        return self.host.find_principal(principal_id, site)

    def getSite(self, connection):
        """The site object in ``connection``, or None when there is none."""
        if self._getSite is not None:
            return self._getSite(connection)
        if self.site_oid is None:
            return None
        return load_site(connection, self.site_oid, self.host,
                         self.site_hint)

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
        txn.user = self.host.transaction_user(user)
        txn.description = note.strip() if note else ''
        watch = CommitWatch(manager)
        txn.join(watch)
        scope._attempt = (txn, watch)
        try:
            result = fn()
            txn, watch = scope._attempt  # renew_transaction() may change it
            if (watch.aborted or watch.refused
                    or manager.get() is not txn):
                raise ended_by_user_code()
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
        if not callable(fn):
            raise ArgumentTypeError('expected a callable to run in the unit, '
                                    'not %r' % (fn,))
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
