"""The job runtime: how a job goes from its request to its final state.

A job is recorded (:func:`track`) when it is requested, handed to the
scheduler after the caller's commit (:func:`after_commit`, or at once:
:func:`dispatch`), run in a pool thread inside its unit of work
(:func:`run`), and forgotten by the runtime when it ends; its status
stays in the job store.  Every change of its state goes through the
store's transition table.  The public API is :mod:`cipher.background.jobs`.

A pool thread keeps its connection between back-to-back jobs and closes
it when it runs out of work.  :class:`_RunningJobs` gives the jobs their
stop story (:mod:`cipher.background.shutdown`): queued jobs are
cancelled, running ones asked to stop.
"""
import contextvars
import logging
import threading
import traceback

from cipher.background import jobstore as states
from cipher.background import shutdown
from cipher.background._jobargs import from_refs
from cipher.background._jobargs import result_oids
from cipher.background._pool import when_idle
from cipher.background.context import UnitOfWork
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.errors import JobCancelled
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import WaitTimeout
from cipher.background.jobstore import MemoryJobStore
from cipher.background.jobstore import site_path
from cipher.background.output import captured
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scope import ConnectionSlot
from cipher.background.scope import current_connection

log = logging.getLogger('cipher.background.jobs')

_defaults_lock = threading.Lock()
_defaults = {'store': MemoryJobStore(), 'scheduler': None}
#: The _Job running in this thread (a ContextVar: set and reset, so a job
#: run at once inside another leaves the outer one current).
current_job_var = contextvars.ContextVar('cipher.background.job', default=None)
_slots = threading.local()  # .slot: the ConnectionSlot of a pool thread
#: Jobs not finished yet, by id: what a stop has to reach.  Changed and
#: read by single dict operations, which are atomic, and with no lock: a
#: lock that the submitting thread and the pool threads take for every
#: job is where they queue up behind each other (see jobstore).
_live = {}


def get_job_store():
    """The job store status is kept in (by default a MemoryJobStore)."""
    return _defaults['store']


def set_job_store(store):
    """Use ``store`` (an IJobStore) for new jobs; return the previous one."""
    with _defaults_lock:
        previous, _defaults['store'] = _defaults['store'], store
    return previous


def get_scheduler():
    """The scheduler jobs run on; by default a BackgroundScheduler with a
    thread per CPU, created on first use."""
    with _defaults_lock:
        if _defaults['scheduler'] is None:
            _defaults['scheduler'] = BackgroundScheduler(
                thread_name_prefix='cipher.background.job')
        return _defaults['scheduler']


def check_scheduler(scheduler):
    """ArgumentTypeError unless ``scheduler`` is an IScheduler."""
    if not callable(getattr(scheduler, 'start', None)):
        raise ArgumentTypeError(
            'expected a scheduler (such as BackgroundScheduler(), with '
            'start()), not %r' % (scheduler,))


def set_scheduler(scheduler):
    """Run new jobs on ``scheduler`` (an IScheduler, or None for the
    default); return the previous one.  For another pool size:
    ``set_scheduler(BackgroundScheduler(max_workers=8))``."""
    if scheduler is not None:
        check_scheduler(scheduler)
    with _defaults_lock:
        previous, _defaults['scheduler'] = _defaults['scheduler'], scheduler
    return previous


class _StopEvent:
    """A ``threading.Event`` made when first set or waited for: few jobs
    ever wait to retry or are cancelled, and an Event costs as much as a
    fifth of submitting a job."""

    __slots__ = ('_event',)
    _making = threading.Lock()

    def __init__(self):
        self._event = None

    def _made(self):
        if self._event is None:
            with self._making:
                if self._event is None:
                    self._event = threading.Event()
        return self._event

    def set(self):
        self._made().set()

    def is_set(self):
        event = self._event
        return event is not None and event.is_set()

    def wait(self, timeout=None):
        return self._made().wait(timeout)


class Job:
    """What one job needs to run: picklable references only."""

    def __init__(self, job_id, fn, name, args, kwargs, note, store):
        self.id = job_id
        self.fn = fn
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.note = note
        self.store = store
        self.refs = []        # the Refs of the arguments, until dispatch
        self.by_oid = False   # are there any
        self.site = None      # a Ref, while the site awaits its OID
        self.db = None
        self.principal_id = None
        self.host = None      # the IHost current at submission
        self.retry_policy = None
        self.uow = None
        self.attempts = 1
        self.stop_event = _StopEvent()

    def resolve(self):
        """At dispatch (after the caller's commit): OIDs of the arguments
        and the site, and the unit of work."""
        for ref in self.refs:
            ref.resolve()
        self.refs = []
        site_oid = site_hint = None
        if self.site is not None:
            jar = self.site.obj._p_jar
            self.site.resolve()
            site_oid, site_hint = self.site.oid, self.site.hint
            if self.db is None:
                self.db = jar.db()
            elif jar.db() is not self.db:
                raise ConfigurationError(
                    'the site of job %s belongs to another database than '
                    'its arguments; pass objects of one database' % self.id)
        self.uow = UnitOfWork(self.db, site_oid, self.principal_id,
                              retry_policy=self.retry_policy, host=self.host,
                              site_hint=site_hint)


def callable_name(fn):
    """The dotted name a job's status shows for ``fn``."""
    module = getattr(fn, '__module__', None) or '?'
    return '%s.%s' % (module, getattr(fn, '__qualname__', repr(fn)))


def track(job, state):
    """Record the new ``job`` in its store, in ``state``."""
    job.store.add(job.id, job.name, state, principal=job.principal_id,
                  site=None if job.site is None else site_path(job.site.hint))
    if not _live:  # work starts after a quiet spell (not once per job: costly)
        shutdown.arm_exit_hook()
    _live[job.id] = job


def live_job(job_id):
    """The Job of ``job_id`` while it is not finished, or None."""
    return _live.get(job_id)


def forget(job):
    """The job ended (or never will run): the runtime lets it go."""
    _live.pop(job.id, None)


def _live_jobs():
    return list(_live.copy().values())


def after_commit(job, scheduler):
    """The caller's transaction committed: queue the job, unless it was
    cancelled meanwhile."""
    if job.store.transition(job.id, states.QUEUED):  # not cancelled
        dispatch(job, scheduler)
    else:
        forget(job)


def drop(job):
    """The caller's transaction aborted (or its savepoint rolled back)."""
    job.store.transition(job.id, states.DROPPED)
    forget(job)


def dispatch(job, scheduler):
    """Resolve the job's OIDs and hand it to ``scheduler`` (default: the
    default scheduler); a failure fails the job and is raised."""
    try:
        job.resolve()
        (scheduler or get_scheduler()).start(run, (job,))
    except Exception as exc:
        _fail(job, exc)
        forget(job)
        raise


def _fail(job, exc, state=states.FAILED):
    job.store.transition(
        job.id, state, error='%s: %s' % (type(exc).__name__, exc),
        traceback=''.join(traceback.format_exception(exc)))


def run(job):
    """Run the job in this (pool) thread, inside its unit of work."""
    store = job.store
    try:
        if not store.transition(job.id, states.RUNNING, attempts=1,
                                started=states._now()):
            return  # cancelled while queued
        token = current_job_var.set(job)
        try:
            with captured(lambda text: store.write(job.id, text)):
                _run_unit(job)
        finally:
            current_job_var.reset(token)
    finally:
        forget(job)


def _pool_slot():
    """The connection kept by this pool thread between back-to-back jobs
    (closed when the thread runs out of work), or None outside a pool."""
    slot = getattr(_slots, 'slot', None)
    if slot is None:
        slot = _slots.slot = ConnectionSlot()
    return slot if when_idle(_slots, slot.release) else None


def _run_unit(job):
    store = job.store
    slot = _pool_slot()
    try:
        result = job.uow.run(
            lambda: _call(job), note=job.note, stop_event=job.stop_event,
            slot=slot, runner_thread=slot is not None,
            on_retry=lambda number, error, delay: _retrying(job, number),
            on_error=lambda exc: _log_failure(job, exc))
    except (JobCancelled, Interrupted):
        store.transition(job.id, states.CANCELLED)
    except OutcomeUnknown as exc:
        _fail(job, exc, states.OUTCOME_UNKNOWN)
    except Exception as exc:
        _fail(job, exc)
    except BaseException as exc:
        log.error('Job %s (%s) interrupted by %s', job.id, job.name,
                  type(exc).__name__)
        _fail(job, exc, states.INTERRUPTED)
        raise
    else:
        store.transition(job.id, states.SUCCEEDED,
                         result=result_oids(result))


def _retrying(job, attempt_number):
    job.attempts = attempt_number  # the attempt that comes next
    job.store.transition(job.id, states.RETRYING)


def _log_failure(job, exc):
    # While the job's connection is still open: reprs may need it.
    if isinstance(exc, JobCancelled):
        return
    if isinstance(exc, OutcomeUnknown):
        log.critical('Job %s (%s): %s', job.id, job.name, exc)
    else:
        log.error('Job %s (%s) failed', job.id, job.name, exc_info=exc)


def _call(job):
    if job.attempts > 1:  # _run() reported the first one
        job.store.transition(job.id, states.RUNNING, attempts=job.attempts)
    if not job.by_oid:
        return job.fn(*job.args, **job.kwargs)
    conn = current_connection()
    host = job.uow.host

    def load(ref):
        return ref.load(conn, host)
    return job.fn(*from_refs(job.args, load), **from_refs(job.kwargs, load))


class _RunningJobs:
    """The unfinished jobs, as a runner of :mod:`cipher.background.shutdown`:
    a stop cancels the queued ones and asks the running ones to stop."""

    def request_stop(self):
        for job in _live_jobs():
            cancel_job(job.store, job.id, job)
        with _defaults_lock:
            scheduler, _defaults['scheduler'] = _defaults['scheduler'], None
        if scheduler is not None:
            scheduler.shutdown(wait=False, cancel_futures=True)

    def join(self, deadline):
        alive = []
        for job in _live_jobs():
            try:
                job.store.wait(job.id, shutdown.remaining(deadline))
            except WaitTimeout:
                alive.append(job.id)
        return alive


shutdown.register(_RunningJobs())


def cancel_job(store, job_id, job):
    """Cancel a job waiting to run, or ask a running one to stop (``job``,
    its live Job or None, has its retry wait ended); see jobs.cancel."""
    for _ in range(3):  # the state may move on between the two calls
        state = store.get(job_id).state
        if state in (states.PENDING_COMMIT, states.QUEUED):
            if store.transition(job_id, states.CANCELLED):
                return True
        elif state in (states.RUNNING, states.RETRYING):
            if store.update(job_id, expect={states.RUNNING, states.RETRYING},
                            cancel_requested=True):
                if job is not None:
                    job.stop_event.set()  # ends a retry wait at once
                return True
        else:
            return False
    return False
