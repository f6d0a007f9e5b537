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

import transaction
import ZODB
from zope.interface import implementer

from cipher.background import aftercommit
from cipher.background import shutdown
from cipher.background.context import UnitOfWork
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import ConfigurationError
from cipher.background.errors import DatabaseClosed
from cipher.background.errors import Interrupted
from cipher.background.errors import NotASite
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import RetriesExhausted
from cipher.background.errors import SiteNotFound
from cipher.background.errors import ThreadBusy
from cipher.background.interfaces import IBackgroundWorker
from cipher.background.scope import ConnectionSlot
from cipher.background.scope import check_thread_idle
from cipher.background.scope import current_scope
from cipher.background.scope import in_unit
from cipher.background.host import caller_site
from cipher.background.host import get_host
from cipher.background.host import load_site
from cipher.background.security import check_principal_id
from cipher.background.shutdown import EXIT_GRACE_SECONDS  # noqa: F401
from cipher.background.workerstatus import StatusRecord
from cipher.background.workerstatus import now as _now


log = logging.getLogger(__name__)

#: Errors after which no unit of a worker can ever run: it ends 'crashed'.
_FATAL = (SiteNotFound, NotASite, DatabaseClosed)

_live_workers = set()
_pending_workers = set()  # waiting for a commit to start
_live_lock = threading.Lock()


def workers():
    """The live workers (started, not yet ended), sorted by name."""
    with _live_lock:
        return sorted(_live_workers, key=lambda w: w.name)


class _Workers:
    """The live workers, as a runner of :mod:`cipher.background.shutdown`."""

    def request_stop(self):
        with _live_lock:
            pending = list(_pending_workers)
        for worker in workers() + pending:
            worker._stop_event.set()  # a pending one is dropped at commit

    def join(self, deadline):
        running = workers()
        for worker in running:
            if worker is not threading.current_thread():
                worker.join(shutdown.remaining(deadline))
        return [w for w in running if w.is_alive()]


shutdown.register(_Workers())


def stop_all(timeout=None):
    """Ask every live worker and job to stop, then wait for them within
    ``timeout`` seconds in total.  Returns what is still alive: workers,
    and the ids of jobs still running."""
    return shutdown.stop_all(timeout)


@implementer(IBackgroundWorker)
class BackgroundWorkerThread(threading.Thread):
    """A thread that works on a ZODB site as a user.

    Override ``scheduleNextWork()`` (wait for work with ``self.wait()``;
    return False to end), ``doWork()`` and, if needed, ``doCleanup()`` and
    ``outcomeUnknown()``.  ``getSite(connection)`` and
    ``getPrincipal(principal_id)`` are the override points for finding
    the site and the user.
    """

    # %-templates over thread_name, class_name, site_name and user_name.
    description = "background worker thread (%(class_name)s) for %(site_name)s"
    work_transaction_note = "%(thread_name)s"
    cleanup_transaction_note = "%(thread_name)s cleanup"

    log = log  # subclasses may log elsewhere

    #: The IRetryPolicy for this class's units; None means the default.
    retry_policy = None

    #: Where the host found the site (forSite(): its ``locate()``).
    site_hint = None

    #: Seconds to wait after a failed unit before the next one, doubling
    #: with each failure in a row up to ``failure_backoff_max``.
    failure_backoff = 0.1
    failure_backoff_max = 30.0

    def __init__(self, site_db, site_oid, site_name, user_name, daemon=True,
                 retry_policy=None, host=None):
        # A real database takes 8-byte OIDs only; a stand-in database (the
        # stubs of cipher.background 2.0's tests) may use any key.
        if site_oid is None or isinstance(site_db, ZODB.DB) and not (
                isinstance(site_oid, bytes) and len(site_oid) == 8):
            raise ConfigurationError(
                'site_oid must be the 8-byte ZODB OID of a stored site '
                '(site._p_oid), not %r; or use %s.forSite(site)' % (
                    site_oid, type(self).__name__))
        check_principal_id(user_name)
        self.site_db = site_db
        self.site_oid = site_oid
        self.site_name = site_name
        self.user_name = user_name
        if retry_policy is not None:
            self.retry_policy = retry_policy
        self.unit_of_work = UnitOfWork(
            site_db, site_oid, user_name, retry_policy=self.retry_policy,
            getSite=self.getSite, getPrincipal=self.getPrincipal, host=host)
        self.host = self.unit_of_work.host
        super().__init__(name=self._expand(self.description), daemon=daemon)
        for template in (self.work_transaction_note,
                         self.cleanup_transaction_note):  # fail here, not
            self._expand(template, thread_name=self.name)  # in the thread
        self._note_cache = (None, None)
        self._stop_event = threading.Event()
        self._start_lock = threading.Lock()
        self._start_claimed = False
        self._status = StatusRecord(self.name)
        self._slot = ConnectionSlot()
        self._site_manager = None  # forSite(): the site connection's
        self._repeated = (None, 0)  # (the last failure's text, times)

    @classmethod
    def forSite(cls, site, user_name=None, daemon=True, **kwargs):
        """A worker for a stored site object, as ``user_name`` (default:
        the principal of the current interaction; SYSTEM to run
        unchecked).  PrincipalRequired when there is no user and the site
        checks security.  A site added in the caller's transaction is
        taken too (start the worker with startAfterCommit())."""
        host = get_host()  # what the constructor's UnitOfWork takes too
        db, oid, hint = caller_site(host, site)
        if user_name is None:
            user_name = host.current_user()
        host.check_user(user_name, site)
        site_name = getattr(site, '__name__', None) or ''
        worker = cls(db, oid, site_name, user_name, daemon=daemon, **kwargs)
        worker.site_hint = worker.unit_of_work.site_hint = hint
        worker._site_manager = getattr(site._p_jar, 'transaction_manager',
                                       None)
        return worker

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
        return load_site(connection, self.site_oid, self.host,
                         self.site_hint)

    def getPrincipal(self, principal_id):
        """The principal the work runs as, or None for no participation.

        Called with the site set.  By default the worker's host finds it
        (the default host: through the site's IAuthentication utility, see
        :func:`cipher.background.security.lookup_principal`); override for
        users stored as persistent objects.  Raise PrincipalNotFound for
        an unknown id.
        """
        return self.host.find_principal(principal_id, current_scope().site)

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

    def outcomeUnknown(self, error):
        """Called when a unit's commit failed after the vote (``error`` is
        the OutcomeUnknown): it may or may not be in the database, and it
        is not retried.  Look and decide here; the default does nothing
        more than the CRITICAL log line already written."""

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
        soon as the worker is stopped (at once if it already is).

        Between units, in the worker's own thread, the connection kept
        from the last unit is closed first: a waiting worker holds no
        connection.
        """
        if threading.current_thread() is self and not in_unit():
            self._slot.release()
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
        shutdown.arm_exit_hook()
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
        """Start the thread when the current transaction of
        ``transaction_manager`` commits; never if it aborts or the
        savepoint it was asked in is rolled back (the status says
        'dropped').  The default manager is the one of the connection the
        site was taken from by forSite() (pyramid_tm's explicit mode),
        else the thread's."""
        manager = (transaction_manager or self._site_manager
                   or self.host.transaction_manager() or transaction.manager)
        aftercommit.current_transaction(manager)  # refuse before claiming
        self._claimStart()
        with _live_lock:
            _pending_workers.add(self)
        aftercommit.schedule(manager, self._afterCommit, self._dropped)
        self._update(state='pending-commit')

    def _afterCommit(self):
        with _live_lock:
            _pending_workers.discard(self)
        if self.stopped:
            self._dropped()
        else:
            self._launch()

    def _dropped(self):
        with _live_lock:
            _pending_workers.discard(self)
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
            state = self._loop()
            self._update(state=state)
        finally:
            self._slot.release()
            self._stop_event.set()
            with _live_lock:
                _live_workers.discard(self)

    def _loop(self):
        """Run units until the end; return the final state."""
        failures = 0
        while not self.stopped:
            self._update(state='waiting')
            try:
                more = self.scheduleNextWork()
            except Exception as exc:
                self.log.exception(
                    'Exception in %s, thread terminated', self.name)
                self._update(**_error_fields(exc))
                return 'crashed'
            except BaseException as exc:
                return self._interrupted(exc)
            if not more:
                break
            outcome = self._runUnit(self._slot)
            if outcome in _FINAL_STATES:
                return outcome
            if outcome == 'failed':
                failures += 1
                self._slot.release()
                delay = min(self.failure_backoff_max,
                            self.failure_backoff * 2 ** min(failures - 1, 30))
                if not self.wait(delay):
                    break
            else:
                failures = 0
        return 'stopped'

    def runOnce(self):
        """One iteration in the calling thread (for tests): False when
        scheduleNextWork() said to end, else True after the unit ran.

        ThreadBusy, before anything runs, when the calling thread has a
        site, an interaction or a transaction in progress.  Exceptions of
        scheduleNextWork() propagate.
        """
        check_thread_idle('runOnce()')
        if not self.scheduleNextWork():
            return False
        self._runUnit()
        return True

    def _work(self):
        if self._status.state != 'working':  # once per unit, not per try
            self._update(state='working')
        self.doWork()

    def _runUnit(self, slot=None):
        """Run doWork, then doCleanup; return 'done', 'failed', or a final
        state of the worker ('stopped', 'crashed', 'interrupted')."""
        outcome = self._runPart(self._work, self.getTransactionNote(), slot)
        # Also after a stop during a retry wait ('stopped'): the cleanup
        # gets its first attempt, and ends at once if that conflicts.
        if outcome in ('done', 'failed', 'stopped') and self._hasCleanup():
            cleanup = self._runPart(self.doCleanup, self.getCleanupNote(),
                                    slot, cleanup=True)
            if cleanup != 'done':
                outcome = cleanup
        if outcome in ('crashed', 'interrupted'):
            self._update(state=outcome)
        elif outcome == 'done':
            self._count('units_done', last_run=_now())
            self._repeated = (None, 0)
        elif outcome == 'failed':
            self._count('units_failed', last_run=_now())
        return outcome

    def _runPart(self, fn, note, slot, cleanup=False):
        try:
            self.unit_of_work.run(
                fn, note=note, stop_event=self._stop_event,
                on_retry=self._onRetry, on_error=self._logUnitError,
                slot=slot, principal_optional=cleanup,
                runner_thread=slot is not None)  # run(): the loop's own
        except ThreadBusy:
            raise
        except Interrupted as exc:
            # The unit was given up: say so, it is not in the database.
            self.log.warning('%s stopped: %s; the unit was not done',
                             self.name, exc)
            return 'stopped'
        except _FATAL as exc:
            self._update(**_error_fields(exc))
            return 'crashed'
        except OutcomeUnknown as exc:
            self._count('units_outcome_unknown', **_error_fields(exc))
            self.outcomeUnknown(exc)
            return 'failed'
        except Exception as exc:
            self._update(**_error_fields(exc))
            return 'failed'
        except BaseException as exc:
            return self._interrupted(exc)
        return 'done'

    def _interrupted(self, exc):
        self.log.error('%s interrupted by %s%s; thread terminated',
                       self.name, type(exc).__name__,
                       (': %s' % exc) if str(exc) else '')
        self._update(**_error_fields(exc))
        return 'interrupted'

    def _hasCleanup(self):
        # The default doCleanup does nothing: an empty transaction for it
        # would write nothing and cost a begin and a commit per unit.
        return type(self).doCleanup is not BackgroundWorkerThread.doCleanup

    def _onRetry(self, attempt_number, error, delay):
        self._count('conflicts_retried', state='retrying')

    def _logUnitError(self, exc):
        # Called while the connection is still open: reprs in the
        # traceback (and __traceback_info__) may need it.
        if isinstance(exc, OutcomeUnknown):
            self.log.critical('%s: %s', self.name, exc)
        elif isinstance(exc, RetriesExhausted):
            self.log.error('%s: %s', self.name, exc)
        elif isinstance(exc, _FATAL):
            self.log.error('Exception in %s, thread terminated: %s',
                           self.name, exc)
        else:
            text = '%s: %s' % (type(exc).__name__, exc)
            last, times = self._repeated
            if text == last:
                self._repeated = (text, times + 1)
                self.log.error('Exception in %s (the same, %d times in a '
                               'row): %s', self.name, times + 1, text)
            else:
                self._repeated = (text, 1)
                self.log.exception('Exception in %s', self.name)


#: What _runUnit returns when the worker must end.
_FINAL_STATES = frozenset(['stopped', 'crashed', 'interrupted'])


def _error_fields(exc):
    return dict(last_error='%s: %s' % (type(exc).__name__, exc),
                last_error_time=_now())
