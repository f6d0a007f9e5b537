"""One-shot jobs: ``perform(fn, *args, **kwargs)`` runs a callable in the
background, in the unit-of-work context of the caller's site and user.

By default a job is handed to the scheduler only when the caller's
transaction commits, and dropped if it aborts.  Its status (state,
progress, output, result or error) lives in the job store, outside the
ZODB, so reporting never makes the job's transaction conflict.
"""
import logging
import threading
import time
import traceback

import transaction
from persistent import Persistent
from ZODB.POSException import POSKeyError
from zope.component.hooks import getSite

from cipher.background import jobstore as states
from cipher.background.context import UnitOfWork
from cipher.background.context import isolated
from cipher.background.errors import ConfigurationError
from cipher.background.errors import JobCancelled
from cipher.background.errors import NotInJob
from cipher.background.errors import ObjectNotStored
from cipher.background.errors import WaitTimeout
from cipher.background.jobstore import MemoryJobStore
from cipher.background.output import captured
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scheduler import _check_callable
from cipher.background.scheduler import new_id

log = logging.getLogger(__name__)

_defaults_lock = threading.Lock()
_defaults = {'store': MemoryJobStore(), 'scheduler': None}
_local = threading.local()   # .job: the _Job running in this thread


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


def set_scheduler(scheduler):
    """Run new jobs on ``scheduler`` (an IScheduler, or None for the
    default); return the previous one.  For another pool size:
    ``set_scheduler(BackgroundScheduler(max_workers=8))``."""
    with _defaults_lock:
        previous, _defaults['scheduler'] = _defaults['scheduler'], scheduler
    return previous


class _Ref:
    """A persistent argument, passed by OID (known at the latest at the
    caller's commit) and loaded again in the job's own connection."""

    __slots__ = ('obj', 'oid')

    def __init__(self, obj):
        self.obj = obj
        self.oid = None

    def resolve(self):
        self.oid = self.obj._p_oid
        if self.oid is None:
            raise ObjectNotStored(
                'the persistent argument %r never reached the database '
                '(no OID at dispatch); add it to the database in the '
                "caller's transaction, or pass it after that commits"
                % (self.obj,))
        self.obj = None  # never keep the caller's object past dispatch

    def load(self, connection):
        try:
            return connection.get(self.oid)
        except (POSKeyError, KeyError):
            raise ObjectNotStored(
                'the persistent argument with OID %r is not in the database '
                '(it was removed, or its transaction never committed)'
                % (self.oid,)) from None


class _Job:
    """What one job needs to run: picklable references only."""

    def __init__(self, job_id, fn, args, kwargs, uow, note, store):
        self.id = job_id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.uow = uow
        self.note = note
        self.store = store
        self.attempts = 0
        self.scope = None


def _name(fn):
    module = getattr(fn, '__module__', None) or '?'
    return '%s.%s' % (module, getattr(fn, '__qualname__', repr(fn)))


def _database_of(values):
    """The database of the first stored persistent object among values."""
    for value in values:
        jar = getattr(value, '_p_jar', None)
        if isinstance(value, Persistent) and jar is not None:
            return jar.db()
    return None


def _by_reference(value, db):
    if not isinstance(value, Persistent):
        return value
    jar = value._p_jar
    if jar is not None and jar.db() is not db:
        raise ConfigurationError(
            'the persistent argument %r belongs to another database than '
            "the job's; pass objects of the job's database only" % (value,))
    return _Ref(value)


def perform(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in the background after the caller's
    transaction commits; return the job id at once.

    Every keyword argument goes to ``fn``: perform() reserves none.  Use
    :func:`submit` for options (database, site, user, dispatch at once, a
    scheduler, a note).
    """
    return submit(fn, args, kwargs)


def submit(fn, args=(), kwargs=None, *, db=None, site=None, user=None,
           after_commit=True, scheduler=None, note=None, retry_policy=None):
    """Run ``fn(*args, **kwargs)`` as a job; return its id at once.

    The database, site and principal are taken from the caller's context
    (the current site and interaction; with no site, the database of the
    first stored persistent argument) unless ``db``, ``site`` or ``user``
    say otherwise.  With ``after_commit`` (the default) the job
    waits for the caller's transaction to commit and is dropped if it
    aborts; otherwise it is queued at once.  Persistent objects among
    ``args`` and ``kwargs`` are passed by OID and loaded in the job's own
    connection.  TypeError for a non-callable ``fn``.
    """
    _check_callable(fn, args, kwargs)
    owner = getattr(fn, '__self__', None)
    if isinstance(fn, Persistent) or isinstance(owner, Persistent):
        raise TypeError(
            '%r belongs to a persistent object of the caller\'s connection; '
            'pass a plain function and the object as an argument' % (fn,))
    if db is None and site is None and getSite() is None:
        db = _database_of(list(args) + list((kwargs or {}).values()))
    uow = UnitOfWork.capture(site=site, db=db, user=user,
                             retry_policy=retry_policy)
    args = tuple(_by_reference(a, uow.db) for a in args)
    kwargs = {k: _by_reference(v, uow.db) for k, v in (kwargs or {}).items()}
    store = get_job_store()
    job_id = new_id()
    name = _name(fn)
    job = _Job(job_id, fn, args, kwargs, uow,
               note or 'job %s (%s)' % (name, job_id), store)
    if after_commit:
        store.add(job_id, name, states.PENDING_COMMIT)
        txn = transaction.get()
        txn.addAfterCommitHook(_after_commit, (job, scheduler))
        txn.addAfterAbortHook(_drop, (job,))
    else:
        store.add(job_id, name, states.QUEUED)
        _dispatch(job, scheduler)
    return job_id


def _after_commit(committed, job, scheduler):
    if not committed:
        _drop(job)
        return
    try:
        if job.store.update(job.id, expect={states.PENDING_COMMIT},
                            state=states.QUEUED):  # not cancelled meanwhile
            _dispatch(job, scheduler)
    except Exception:
        # Hooks must not raise: the caller's commit is done.  The status
        # says what happened.
        log.exception('Could not dispatch job %s', job.id)


def _drop(job):
    job.store.update(job.id, expect={states.PENDING_COMMIT},
                     state=states.DROPPED)


def _dispatch(job, scheduler):
    try:
        for ref in list(job.args) + list(job.kwargs.values()):
            if isinstance(ref, _Ref):
                ref.resolve()
        (scheduler or get_scheduler()).start(_run, (job,))
    except Exception as exc:
        _fail(job, exc)
        raise


def _fail(job, exc):
    job.store.update(
        job.id, state=states.FAILED,
        error='%s: %s' % (type(exc).__name__, exc),
        traceback=''.join(traceback.format_exception(exc)))


def _run(job):
    """Run the job in this (pool) thread, inside its unit of work."""
    store = job.store
    if not store.update(job.id, expect={states.QUEUED}, attempts=1,
                        state=states.RUNNING, started=states._now()):
        return  # cancelled while queued
    # The thread may be busy (the caller's, in immediate mode, or a job
    # running this one at once): it gets its footing back afterwards.
    with isolated(), captured(lambda text: store.write(job.id, text)):
        _local.job = job
        try:
            with job.uow.entered() as job.scope:
                result = job.uow.attempt(
                    lambda: _call(job), note=job.note,
                    on_retry=lambda n, error, delay: store.update(
                        job.id, state=states.RETRYING))
        except JobCancelled:
            store.update(job.id, state=states.CANCELLED)
        except Exception as exc:
            log.exception('Job %s (%s) failed', job.id, _name(job.fn))
            _fail(job, exc)
        else:
            if isinstance(result, Persistent):
                result = result._p_oid
            store.update(job.id, state=states.SUCCEEDED, result=result)
        finally:
            _local.job = None
            job.scope = None


def _call(job):
    job.attempts += 1
    if job.attempts > 1:  # _run() reported the first one
        job.store.update(job.id, state=states.RUNNING,
                         attempts=job.attempts)
    conn = job.scope.connection
    args = [a.load(conn) if isinstance(a, _Ref) else a for a in job.args]
    kwargs = {k: v.load(conn) if isinstance(v, _Ref) else v
              for k, v in job.kwargs.items()}
    return job.fn(*args, **kwargs)


# -- inside a job --

def _current():
    job = getattr(_local, 'job', None)
    if job is None:
        raise NotInJob('this works only inside a running job (started with '
                       'perform() or submit())')
    return job


def current_job():
    """The status of the job running in this thread, or None."""
    job = getattr(_local, 'job', None)
    return None if job is None else job.store.get(job.id)


def check_cancelled():
    """Raise JobCancelled if somebody asked to cancel the running job."""
    job = _current()
    if job.store.get(job.id).cancel_requested:
        raise JobCancelled('job %s was cancelled' % job.id)


def set_progress(value, data=None):
    """Report the running job's progress (``value`` and optional ``data``);
    raises JobCancelled once the job was cancelled."""
    job = _current()
    job.store.update(job.id, progress=value, progress_data=data)
    check_cancelled()


def wait_for(find, tries=20, interval=0.05, connection=None):
    """Look an object up until another transaction has committed it.

    ``find`` is an OID, or a callable taking the connection and returning
    the object or None.  Between tries the current transaction is
    aborted (so call this before writing anything) for a fresh view of
    the database.  Returns the object; WaitTimeout after ``tries``.
    """
    if connection is None:
        connection = _current().scope.connection
    for attempt in range(tries):
        try:
            found = (find(connection) if callable(find)
                     else connection.get(find))
        except (POSKeyError, KeyError):
            found = None
        if found is not None:
            return found
        if attempt + 1 < tries:
            txn = transaction.get()
            user, note = txn.user, txn.description
            transaction.abort()
            time.sleep(interval)
            if getattr(_local, 'job', None) is not None:
                check_cancelled()
            txn = transaction.begin()
            txn.user, txn.description = user, note
    raise WaitTimeout(
        '%r was not found after %d tries over %gs; the transaction that '
        'adds it may not have committed: try more tries or a longer '
        'interval' % (find, tries, tries * interval))


# -- from anywhere --

def get_status(job_id):
    """The IJobStatus of ``job_id`` (state 'unknown' for unknown ids)."""
    return get_job_store().get(job_id)


def wait(job_id, timeout=None):
    """Wait until the job is finished; return its final status.

    WaitTimeout when ``timeout`` seconds pass first."""
    return get_job_store().wait(job_id, timeout)


def get_progress(job_id):
    """TurboGears-style progress: ``(-1, None)`` while waiting to run,
    ``(value, data)`` while running (value 0 before any report), None when
    finished or unknown."""
    status = get_job_store().get(job_id)
    if status.state in (states.PENDING_COMMIT, states.QUEUED):
        return (-1, None)
    if status.state in (states.RUNNING, states.RETRYING):
        return (0 if status.progress is None else status.progress,
                status.progress_data)
    return None


def cancel(job_id):
    """Cancel a job: one waiting to run never starts; a running one is
    told, and stops at its next set_progress() or check_cancelled().
    Returns True if the job could be cancelled, False if it had finished
    or is unknown."""
    store = get_job_store()
    if store.update(job_id, expect={states.PENDING_COMMIT, states.QUEUED},
                    state=states.CANCELLED):
        return True
    return store.update(job_id, expect={states.RUNNING, states.RETRYING},
                        cancel_requested=True)
