"""The unit-of-work context: the footing a request had, rebuilt in a runner.

A :class:`UnitOfWork` is captured where work is asked for (a view, a
start-up subscriber, a script) and holds only picklable references: the
database, the site's OID and the principal's id.  A runner (a worker
thread, a pool thread) enters it::

    connection -> site -> interaction for the principal -> transaction

and runs user code there, retrying the transaction on transient errors.
Everything it sets is restored in ``finally``, in reverse order.
"""
import contextlib

import transaction
from ZODB.POSException import POSKeyError
from zope.authentication.interfaces import IAuthentication
from zope.authentication.interfaces import PrincipalLookupError
from zope.component import getSiteManager
from zope.component import hooks
from zope.component import queryUtility
from zope.component.interfaces import ISite
from zope.interface import implementer
from zope.security.interfaces import IParticipation
from zope.security.management import endInteraction
from zope.security.management import newInteraction
from zope.security.management import queryInteraction
from zope.security.management import thread_local as _security_local

from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import SiteNotFound
from cipher.background.interfaces import IUnitOfWork
from cipher.background.retry import DEFAULT_POLICY


@implementer(IParticipation)
class Participation:
    """The participation of ``principal`` in a background interaction."""

    interaction = None

    def __init__(self, principal):
        self.principal = principal


def current_principal_id():
    """The id of the principal of the current interaction, or None."""
    interaction = queryInteraction()
    if interaction is None:
        return None
    for participation in interaction.participations:
        if participation.principal is not None:
            return participation.principal.id
    return None


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
    if not ISite.providedBy(site):
        raise NotASite(
            'the object with OID %r (%r) is not a site (it has no local '
            'site manager); pass the OID of a site, or call '
            'setSiteManager() on it first' % (site_oid, site))
    return site


def lookup_principal(principal_id):
    """Look ``principal_id`` up through the IAuthentication utility that
    the current site reaches.

    Returns None when no authentication utility is registered at all
    (plain ZODB applications: the interaction then has no participation,
    as in cipher.background 1.x).  Raises PrincipalNotFound when the
    utility does not know the id: background work never falls back to an
    unchecked interaction for a user it cannot find.
    """
    if principal_id is None:
        return None
    auth = queryUtility(IAuthentication)
    if auth is None:
        return None
    try:
        return auth.getPrincipal(principal_id)
    except PrincipalLookupError:
        raise PrincipalNotFound(
            'principal %r is unknown to the authentication utility %r of '
            'the site; start the work as an existing user, or register '
            'the principal' % (principal_id, auth)) from None


def _in_progress(thread_manager):
    """True when the thread's transaction manager has a transaction in
    progress.

    ``manager`` is the documented attribute of the thread-local manager;
    asking whether its transaction is in progress has no public spelling
    (``get()`` would begin one), so ask the attribute.
    """
    return getattr(getattr(thread_manager, 'manager', None), '_txn',
                   ()) is not None


def _abort_pending(thread_manager):
    """Abort the thread's transaction if one is in progress.

    The unit must start fresh (as ZopeTransaction's ``begin()`` does), but
    ``begin()`` when nothing is pending costs a second sync of the
    connection on every unit.
    """
    if _in_progress(thread_manager):
        thread_manager.abort()


def _ensure_hooks():
    """Make component lookups consult the current site (what
    ``hooks.setHooks()`` does; asked first because it is set once per
    process and cleared only by test tear-downs)."""
    if getSiteManager.implementation is not hooks.getSiteManager:
        hooks.setHooks()


class Scope:
    """An entered unit of work: ``connection``, ``site`` and ``principal``
    for the code inside the ``with`` block.

    The context manager :meth:`UnitOfWork.entered` returns.  It does what
    ZodbConnection, ZopeSite and ZopeInteraction do nested, written out
    as one class: three nested generator context managers cost as much
    per unit as the site and the interaction themselves.
    """

    connection = site = principal = None

    def __init__(self, unit_of_work, on_error=None):
        self._unit_of_work = unit_of_work
        self._on_error = on_error
        self._old_site = None

    def __enter__(self):
        uow = self._unit_of_work
        _abort_pending(transaction.manager)
        self.connection = uow.db.open()
        try:
            self.site = uow.getSite(self.connection)
            _ensure_hooks()
            self._old_site = hooks.getSite()
            hooks.setSite(self.site)
            try:
                self.principal = uow._getPrincipal(uow.principal_id)
                if self.principal is None:
                    newInteraction()
                else:
                    newInteraction(Participation(self.principal))
            except BaseException:
                hooks.setSite(self._old_site)
                raise
        except BaseException as exc:
            self._leave(exc)
            raise
        return self

    def __exit__(self, exc_type, exc, traceback):
        try:
            endInteraction()
        finally:
            hooks.setSite(self._old_site)
            self._leave(exc)
        return False

    def _leave(self, exc):
        try:
            if self._on_error is not None and isinstance(exc, Exception):
                self._on_error(exc)  # the connection is still open
        finally:
            self.connection.close()


@implementer(IUnitOfWork)
class UnitOfWork:
    """Database, site and principal by reference; entered in a runner.

    ``site_oid`` may be None (no local site is set).  ``principal_id`` is
    None for system work (an interaction with no participation).
    ``getSite(connection)`` and ``getPrincipal(principal_id)`` are
    override points: by default the site is loaded by OID and the
    principal looked up by :func:`lookup_principal`.
    """

    def __init__(self, db, site_oid=None, principal_id=None,
                 retry_policy=None, getSite=None, getPrincipal=None):
        if not callable(getattr(db, 'open', None)):
            raise ConfigurationError(
                'expected a ZODB database (an object with open()), got %r; '
                'pass connection.db() or the DB you opened' % (db,))
        if retry_policy is not None and not all(
                callable(getattr(retry_policy, name, None))
                for name in ('isTransient', 'begin')):
            raise ConfigurationError(
                'retry_policy must be an IRetryPolicy (such as '
                'RetryPolicy(attempts=10)), not %r' % (retry_policy,))
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
        ``user`` (default: the current interaction's principal)."""
        if site is None:
            from zope.component.hooks import getSite
            site = getSite()
        site_oid = None
        if site is not None and getattr(site, '_p_jar', None) is not None:
            site_db, site_oid = database_identity(site, 'site')
            db = db or site_db
        if db is None:
            raise ConfigurationError(
                'cannot tell which database to use: there is no current '
                'stored site; pass db= (and site=) explicitly')
        if user is None:
            user = current_principal_id()
        return cls(db, site_oid, user, **kw)

    def getSite(self, connection):
        """The site object in ``connection``, or None when there is none."""
        if self._getSite is not None:
            return self._getSite(connection)
        if self.site_oid is None:
            return None
        return load_site(connection, self.site_oid)

    def entered(self, on_error=None):
        """Open a connection, set the site, start the interaction: a
        context manager whose value is the :class:`Scope`.

        ``on_error(exc)`` is called for an exception leaving the block
        (or raised on the way in) while the connection is still open (log
        it there: the traceback may need the connection), before the
        exception propagates.
        """
        return Scope(self, on_error)

    def attempt(self, fn, note=None, user=None, stop_event=None,
                on_retry=None):
        """Run ``fn()`` in a transaction; retry it on transient errors.

        Must be called inside :meth:`entered`.  Returns ``fn``'s result
        once the transaction committed.  On a transient error (raised by
        ``fn`` or by the commit) the transaction is aborted, the policy's
        backoff waited (interruptible by ``stop_event``: then Interrupted
        is raised) and ``fn`` run again in a fresh transaction;
        ``on_retry(attempt_number, error, delay)`` is called before each
        wait.  RetriesExhausted when the policy gives up; any other error
        propagates after the abort.  A failed unit commits nothing.
        """
        if user is None:
            user = self.principal_id
        policy = self.retry_policy
        manager = transaction.manager
        attempts = None  # the retry bookkeeping, from the first failure on
        # The first try runs in the thread's current transaction: entered()
        # began it fresh, and the commit or abort of an earlier attempt
        # ended it, so it holds nothing yet.  A retry begins a new one,
        # which syncs the connection with what the winner committed.
        txn = manager.get()
        # As txn.setUser(user, '/') and txn.note(note) would on a fresh
        # transaction, at a fraction of their cost.
        user = '/ %s' % user if user else ''
        note = note.strip() if note else ''
        while True:
            txn.user = user
            txn.description = note
            try:
                result = fn()
                manager.commit()
                return result
            except BaseException as error:
                # Ask before abort(): data managers that joined the
                # transaction vote through should_retry() and leave on abort.
                transient = (isinstance(error, Exception)
                             and policy.isTransient(error, manager))
                manager.abort()
                if not transient:
                    raise
                if attempts is None:
                    attempts = policy.begin()
                delay = attempts.backoff(error)
                last_error = error
            if on_retry is not None:
                on_retry(attempts.number, last_error, delay)
            if attempts.wait(delay, stop_event):
                raise Interrupted(
                    'stopped while waiting to retry after %s: %s' % (
                        type(last_error).__name__, last_error)
                ) from last_error
            txn = manager.begin()

    def run(self, fn, note=None, stop_event=None, on_retry=None):
        """Enter, run ``fn()`` in one retried transaction, leave."""
        with self.entered():
            return self.attempt(fn, note=note, stop_event=stop_event,
                                on_retry=on_retry)


def _thread_is_idle():
    """True when this thread has no site, no interaction and no
    transaction in progress: nothing for :func:`isolated` to protect."""
    return (hooks.getSite() is None and queryInteraction() is None
            and not _in_progress(transaction.manager))


@contextlib.contextmanager
def isolated():
    """Run the block with no site, no interaction and a transaction manager
    of its own; give the thread back its own afterwards.

    For work run in a thread that may be busy with something else, such
    as a job run immediately from the after-commit hook of the caller's
    transaction.  An idle thread (a pool thread between tasks) has
    nothing to give back: the block runs as it is, and only a transaction
    it leaves pending is aborted.
    """
    if _thread_is_idle():
        try:
            yield
        finally:
            _abort_pending(transaction.manager)
        return
    old_site = hooks.getSite()
    old_interaction = queryInteraction()
    hooks.setSite(None)
    if old_interaction is not None:
        endInteraction()
    thread_manager = transaction.manager
    old_manager = thread_manager.manager
    thread_manager.manager = transaction.TransactionManager()
    try:
        yield
    finally:
        thread_manager.manager.abort()
        thread_manager.manager = old_manager
        if old_interaction is not None:
            # Not restoreInteraction(): the block's own interactions have
            # overwritten the "previous interaction" it would restore.
            _security_local.interaction = old_interaction
        hooks.setSite(old_site)
