"""Background worker threads with their own ZODB connection.

A :class:`BackgroundWorkerThread` loops ``scheduleNextWork()`` /
``doWork()``; every unit runs in the unit-of-work context
(:mod:`cipher.background.context`) of the site and user it was made for,
in a transaction that is retried on conflicts, followed by ``doCleanup()``
in a transaction of its own.

Live workers are listed by :func:`workers`; at interpreter exit they are
asked to stop and given :data:`EXIT_GRACE_SECONDS` to finish their unit.
"""
import logging
import threading
import time

import transaction
from zope.component.interfaces import ISite
from zope.interface import implementer

from cipher.background.context import UnitOfWork
from cipher.background.context import current_principal_id
from cipher.background.context import database_identity
from cipher.background.context import load_site
from cipher.background.context import lookup_principal
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.errors import NotASite
from cipher.background.errors import RetriesExhausted
from cipher.background.errors import SiteNotFound
from cipher.background.interfaces import IBackgroundWorker
from cipher.background.workerstatus import StatusRecord
from cipher.background.workerstatus import now as _now


log = logging.getLogger(__name__)

#: Seconds that live workers get to finish their unit at interpreter exit.
EXIT_GRACE_SECONDS = 10.0

_live_workers = set()
_live_lock = threading.Lock()
_exit_hook_registered = False


def workers():
    """The live workers (started, not yet ended), sorted by name."""
    with _live_lock:
        return sorted(_live_workers, key=lambda w: w.name)


def stop_all(timeout=None):
    """Ask every live worker to stop, then join them all within ``timeout``
    seconds in total.  Returns the workers still alive afterwards."""
    running = workers()
    for worker in running:
        worker._stop_event.set()
    deadline = None if timeout is None else time.monotonic() + timeout
    for worker in running:
        if worker is threading.current_thread():
            continue
        remaining = (None if deadline is None
                     else max(0.0, deadline - time.monotonic()))
        worker.join(remaining)
    return [w for w in running if w.is_alive()]


def _stop_all_at_exit():
    stop_all(EXIT_GRACE_SECONDS)


def _register_exit_hook():
    global _exit_hook_registered
    with _live_lock:
        if _exit_hook_registered:
            return
        _exit_hook_registered = True
    # threading's own exit hooks run before non-daemon threads are joined
    # and before daemon threads are killed, which is when a stop is still
    # useful; atexit runs too late for non-daemon threads.
    register = getattr(threading, '_register_atexit', None)
    if register is None:  # pragma: no cover (Python builds without it)
        import atexit
        register = atexit.register
    register(_stop_all_at_exit)


@implementer(IBackgroundWorker)
class BackgroundWorkerThread(threading.Thread):
    """A thread that works on a ZODB site as a user.

    Override ``scheduleNextWork()`` (wait for work with ``self.wait()``;
    return False to end), ``doWork()`` and, if needed, ``doCleanup()``.
    ``getSite(connection)`` and ``getPrincipal(principal_id)`` are the
    override points for finding the site and the user.
    """

    # %-templates over thread_name, class_name, site_name and user_name.
    description = "background worker thread (%(class_name)s) for %(site_name)s"
    work_transaction_note = "%(thread_name)s"
    cleanup_transaction_note = "%(thread_name)s cleanup"

    log = log  # subclasses may log elsewhere

    #: The IRetryPolicy for this class's units; None means the default.
    retry_policy = None

    def __init__(self, site_db, site_oid, site_name, user_name, daemon=True,
                 retry_policy=None):
        if not isinstance(site_oid, bytes) or len(site_oid) != 8:
            raise ConfigurationError(
                'site_oid must be the 8-byte ZODB OID of a stored site '
                '(site._p_oid), not %r; or use %s.forSite(site)' % (
                    site_oid, type(self).__name__))
        if user_name is not None and not isinstance(user_name, str):
            raise ConfigurationError(
                'user_name must be a principal id (a str) or None, not %r'
                % (user_name,))
        self.site_db = site_db
        self.site_oid = site_oid
        self.site_name = site_name
        self.user_name = user_name
        if retry_policy is not None:
            self.retry_policy = retry_policy
        self.unit_of_work = UnitOfWork(
            site_db, site_oid, user_name, retry_policy=self.retry_policy,
            getSite=self.getSite, getPrincipal=self.getPrincipal)
        super().__init__(name=self._expand(self.description), daemon=daemon)
        for template in (self.work_transaction_note,
                         self.cleanup_transaction_note):  # fail here, not
            self._expand(template, thread_name=self.name)  # in the thread
        self._note_cache = (None, None)
        self._stop_event = threading.Event()
        self._start_lock = threading.Lock()
        self._start_claimed = False
        self._status = StatusRecord(self.name)

    @classmethod
    def forSite(cls, site, user_name=None, daemon=True, **kwargs):
        """A worker for a stored site object, as ``user_name`` (default:
        the principal of the current interaction)."""
        db, oid = database_identity(site, 'site')
        if not ISite.providedBy(site):
            raise NotASite(
                '%r is not a site (it has no local site manager); pass the '
                'site itself, or call setSiteManager() on it first'
                % (site,))
        if user_name is None:
            user_name = current_principal_id()
        site_name = getattr(site, '__name__', None) or ''
        return cls(db, oid, site_name, user_name, daemon=daemon, **kwargs)

    def _expand(self, template, **extra):
        try:
            return template % dict(
                class_name=type(self).__name__, site_name=self.site_name,
                user_name=self.user_name, **extra)
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                'cannot fill in the template %r of %s (%s: %s); write it '
                'with %%(thread_name)s, %%(class_name)s, %%(site_name)s and '
                '%%(user_name)s only, and %%%% for a percent sign' % (
                    template, type(self).__name__, type(exc).__name__, exc)
            ) from None

    def getTransactionNote(self):
        """The note of each unit's transaction (shown by undo logs and
        tools such as zodbbrowser)."""
        # Expanded once per (template, thread name), not once per unit.
        key = (self.work_transaction_note, self.name)
        if self._note_cache[0] != key:
            self._note_cache = (key, self._expand(
                self.work_transaction_note, thread_name=self.name))
        return self._note_cache[1]

    def getCleanupNote(self):
        """The note of each clean-up transaction."""
        return self._expand(self.cleanup_transaction_note,
                            thread_name=self.name)

    def getSite(self, connection):
        """The site in ``connection``; SiteNotFound or NotASite if the OID
        names no site."""
        return load_site(connection, self.site_oid)

    def getPrincipal(self, principal_id):
        """The principal the work runs as, or None for no participation.

        Called with the site set.  By default the id is looked up through
        the site's IAuthentication utility; override for users stored as
        persistent objects.  Raise PrincipalNotFound for an unknown id.
        """
        return lookup_principal(principal_id)

    # -- the extension points --

    def scheduleNextWork(self):
        """Wait for work; True to run a unit, False to end the thread."""
        return False

    def doWork(self):
        """One unit of work, with the site set and the user's interaction,
        in a transaction that commits after it and is retried on
        conflicts."""

    def doCleanup(self):
        """Runs after every doWork (also a failed one), in a transaction
        of its own, with the site set."""

    # -- status --

    @property
    def status(self):
        """A WorkerStatus snapshot."""
        return self._status.snapshot()

    def _update(self, **changes):
        self._status.update(**changes)

    def _count(self, field, **changes):
        self._status.count(field, **changes)

    # -- starting and stopping --

    @property
    def stopped(self):
        """True once a stop was asked for, or the loop ended."""
        return self._stop_event.is_set()

    def wait(self, seconds):
        """Sleep up to ``seconds``: True when the time passed, False as
        soon as the worker is stopped (at once if it already is)."""
        return not self._stop_event.wait(seconds)

    def _claimStart(self):
        with self._start_lock:
            if self._start_claimed:
                raise AlreadyStarted(
                    '%s was already started (or scheduled to start); a '
                    'thread runs once, so create a new worker' % self.name)
            self._start_claimed = True

    def start(self):
        """Start the thread; SiteNotFound or NotASite when its site is not
        in the database, AlreadyStarted when called twice."""
        self._claimStart()
        try:
            conn = self.site_db.open()
            try:
                self.getSite(conn)
            finally:
                conn.close()
        except BaseException:
            self._start_claimed = False
            raise
        self._launch()

    def _launch(self):
        _register_exit_hook()
        with _live_lock:
            _live_workers.add(self)
        self._update(state='starting', started=_now())
        try:
            super().start()
        except BaseException:
            with _live_lock:
                _live_workers.discard(self)
            raise

    def startAfterCommit(self, transaction_manager=None):
        """Start the thread when the current transaction commits; never if
        it aborts (the status says 'dropped')."""
        self._claimStart()
        txn = (transaction_manager or transaction.manager).get()
        txn.addAfterCommitHook(self._afterCommit)
        txn.addAfterAbortHook(self._afterAbort)
        self._update(state='pending-commit')

    def _afterCommit(self, committed):
        if committed and not self.stopped:
            self._launch()
        else:
            self._afterAbort()

    def _afterAbort(self):
        if self._status.state == 'pending-commit':
            self._stop_event.set()
            self._update(state='dropped')

    def stop(self, timeout=None):
        """Ask the loop to end after the current unit and join the thread
        for up to ``timeout`` seconds; True when it is no longer alive."""
        self._stop_event.set()
        if self.ident is not None and self is not threading.current_thread():
            self.join(timeout)
        return not self.is_alive()

    # -- the loop --

    def run(self):
        """The loop: schedule, work, clean up, until stopped."""
        try:
            while not self.stopped:
                self._update(state='waiting')
                try:
                    more = self.scheduleNextWork()
                except Exception as exc:
                    self.log.exception(
                        'Exception in %s, thread terminated', self.name)
                    self._update(state='crashed', **_error_fields(exc))
                    return
                if not more or not self._runUnit():
                    break
            self._update(state='stopped')
        finally:
            self._stop_event.set()
            with _live_lock:
                _live_workers.discard(self)

    def runOnce(self):
        """One iteration in the calling thread (for tests): False when
        scheduleNextWork() said to end, else True after the unit ran.
        Exceptions of scheduleNextWork() propagate."""
        if not self.scheduleNextWork():
            return False
        self._runUnit()
        return True

    def _work(self):
        if self._status.state != 'working':  # once per unit, not per try
            self._update(state='working')
        self.doWork()

    def _runUnit(self):
        """Run doWork and doCleanup; False when the loop must end."""
        uow = self.unit_of_work
        try:
            with uow.entered(on_error=self._logUnitError):
                try:
                    uow.attempt(self._work, note=self.getTransactionNote(),
                                stop_event=self._stop_event,
                                on_retry=self._onRetry)
                finally:
                    if self._hasCleanup():
                        uow.attempt(self.doCleanup,
                                    note=self.getCleanupNote(),
                                    stop_event=self._stop_event,
                                    on_retry=self._onRetry)
        except Interrupted:
            return False
        except (SiteNotFound, NotASite) as exc:
            self._update(state='crashed', **_error_fields(exc))
            return False
        except Exception as exc:
            self._count('units_failed', **_error_fields(exc, last_run=True))
            return True
        self._count('units_done', last_run=_now())
        return True

    def _hasCleanup(self):
        # The default doCleanup does nothing: an empty transaction for it
        # would write nothing and cost a begin and a commit per unit.
        return type(self).doCleanup is not BackgroundWorkerThread.doCleanup

    def _onRetry(self, attempt_number, error, delay):
        self._count('conflicts_retried', state='retrying')

    def _logUnitError(self, exc):
        # Called while the connection is still open: reprs in the
        # traceback (and __traceback_info__) may need it.
        if isinstance(exc, Interrupted):
            return
        if isinstance(exc, RetriesExhausted):
            self.log.error('%s: %s', self.name, exc)
        elif isinstance(exc, (SiteNotFound, NotASite)):
            self.log.error('Exception in %s, thread terminated: %s',
                           self.name, exc)
        else:
            self.log.exception('Exception in %s', self.name)


def _error_fields(exc, last_run=False):
    now = _now()
    fields = dict(last_error='%s: %s' % (type(exc).__name__, exc),
                  last_error_time=now)
    if last_run:
        fields['last_run'] = now
    return fields

