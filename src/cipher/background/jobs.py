"""One-shot jobs: ``perform(fn, *args, **kwargs)`` runs a callable in the
background, in the unit-of-work context of the caller's site and user.

By default a job is handed to the scheduler only when the caller's
transaction commits, and dropped if it aborts (or if the savepoint it was
asked in is rolled back).  Its status (state, progress, output, result or
error) lives in the job store, outside the ZODB, so reporting never makes
the job's transaction conflict.  Every change of a job's state goes
through the store's transition table (:mod:`cipher.background.jobstore`).
"""
import contextvars
import logging
import threading
import time
import traceback

import transaction
from persistent import Persistent
from ZODB.POSException import POSKeyError
from zope.component.hooks import getSite

from cipher.background import aftercommit
from cipher.background import jobstore as states
from cipher.background import shutdown
from cipher.background._pool import when_idle
from cipher.background.context import ConnectionSlot
from cipher.background.context import UnitOfWork
from cipher.background.context import check_retry_policy
from cipher.background.context import current_connection
from cipher.background.context import is_site
from cipher.background.context import not_a_site_message
from cipher.background.context import renew_transaction
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import Interrupted
from cipher.background.errors import JobCancelled
from cipher.background.errors import NotASite
from cipher.background.errors import NotInJob
from cipher.background.errors import NotInUnit
from cipher.background.errors import ObjectNotStored
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import WaitTimeout
from cipher.background.jobstore import MemoryJobStore
from cipher.background.output import captured
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scheduler import _check_callable
from cipher.background.scheduler import new_id
from cipher.background.security import check_principal_id
from cipher.background.security import check_user_for_site
from cipher.background.security import current_principal_id

log = logging.getLogger(__name__)

_defaults_lock = threading.Lock()
_defaults = {'store': MemoryJobStore(), 'scheduler': None}
#: The _Job running in this thread (a ContextVar: set and reset, so a job
#: run at once inside another leaves the outer one current).
_current_job = contextvars.ContextVar('cipher.background.job', default=None)
_slots = threading.local()  # .slot: the ConnectionSlot of a pool thread
#: Jobs not finished yet, by id: what a stop has to reach.
_live = {}
_live_lock = threading.Lock()


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


# -- persistent objects by reference --

class _Ref:
    """A persistent object, passed by OID (known at the latest at the
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


_SEQUENCES = (list, tuple, set, frozenset)


def _map(value, leaf):
    """``value`` with every persistent object replaced by ``leaf(obj)``, at
    any depth of lists, tuples, sets, frozensets and dicts (exact types:
    a subclass is passed as it is).  A container with nothing to replace
    is passed as the very same object."""
    if isinstance(value, Persistent):
        return leaf(value)
    kind = type(value)
    if kind is dict:
        for key in value:
            if isinstance(key, Persistent):
                raise ConfigurationError(
                    'a persistent object (%r) is a dict key in the '
                    "arguments of a job; it cannot cross to the job's "
                    'connection: use its OID as the key' % (key,))
    return _rebuilt(value, kind, lambda item: _map(item, leaf))


def _unmap(value, leaf):
    """The inverse of :func:`_map`: ``leaf(ref)`` for every _Ref."""
    kind = type(value)
    if kind is _Ref:
        return leaf(value)
    return _rebuilt(value, kind, lambda item: _unmap(item, leaf))


def _rebuilt(value, kind, convert):
    if not value or not (kind in _SEQUENCES or kind is dict):
        return value
    if kind in _SEQUENCES:
        items = [convert(item) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        return kind(items)
    if kind is dict:
        items = {key: convert(item) for key, item in value.items()}
        if all(items[key] is item for key, item in value.items()):
            return value
        return items
    return value


def _result_oids(result):
    """The documented rule for results: a persistent object in a job's
    result (at any depth of lists, tuples, sets and dicts) is replaced by
    its OID, so the caller never holds objects of the job's connection."""
    return _map(result, lambda obj: obj._p_oid)


# -- the job --

class _Job:
    """What one job needs to run: picklable references only."""

    def __init__(self, job_id, fn, name, args, kwargs, note, store):
        self.id = job_id
        self.fn = fn
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.note = note
        self.store = store
        self.refs = []        # the _Refs of the arguments, until dispatch
        self.by_oid = False   # are there any
        self.site = None      # a _Ref, while the site awaits its OID
        self.db = None
        self.principal_id = None
        self.retry_policy = None
        self.uow = None
        self.attempts = 1
        self.stop_event = threading.Event()

    def resolve(self):
        """At dispatch (after the caller's commit): OIDs of the arguments
        and the site, and the unit of work."""
        for ref in self.refs:
            ref.resolve()
        self.refs = []
        site_oid = None
        if self.site is not None:
            jar = self.site.obj._p_jar
            self.site.resolve()
            site_oid = self.site.oid
            if self.db is None:
                self.db = jar.db()
            elif jar.db() is not self.db:
                raise ConfigurationError(
                    'the site of job %s belongs to another database than '
                    'its arguments; pass objects of one database' % self.id)
        self.uow = UnitOfWork(self.db, site_oid, self.principal_id,
                              retry_policy=self.retry_policy)


def _name(fn):
    module = getattr(fn, '__module__', None) or '?'
    return '%s.%s' % (module, getattr(fn, '__qualname__', repr(fn)))


def _manager_of(obj):
    """The transaction manager of the connection ``obj`` lives in."""
    manager = getattr(getattr(obj, '_p_jar', None), 'transaction_manager',
                      None)
    return _unwrapped(manager)


def _unwrapped(manager):
    # transaction.manager is a per-thread front for the thread's manager;
    # a connection opened with the default holds that manager itself.
    return getattr(manager, 'manager', manager)


def _agreed(found, given, message):
    """The one object (by identity) among ``found`` and ``given`` (None:
    not given), or None if there is none; ConfigurationError(``message``)
    when they are not all the same."""
    distinct = {id(value): value for value in found if value is not None}
    if given is not None:
        distinct.setdefault(id(given), given)
    if len(distinct) > 1:
        raise ConfigurationError(message)
    return distinct.popitem()[1] if distinct else None


def _choose_manager(objects, transaction_manager):
    """The transaction manager whose commit releases the job: the one of
    the connections ``objects`` live in, which must agree with each other
    and with ``transaction_manager`` if given; else the thread's."""
    return _agreed(
        map(_manager_of, objects), _unwrapped(transaction_manager),
        'the site and persistent arguments of the job live in connections '
        'with different transaction managers (or not the '
        'transaction_manager= given); a job is released by one commit: '
        'pass objects of one connection, and its transaction manager'
    ) or transaction.manager


def perform(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in the background after the caller's
    transaction commits; return the job id at once.

    Every keyword argument goes to ``fn``: perform() reserves none.  Use
    :func:`submit` for options (database, site, user, dispatch at once, a
    scheduler, a note, a transaction manager).
    """
    return submit(fn, args, kwargs)


def submit(fn, args=(), kwargs=None, *, db=None, site=None, user=None,
           after_commit=True, scheduler=None, note=None, retry_policy=None,
           transaction_manager=None):
    """Run ``fn(*args, **kwargs)`` as a job; return its id at once.

    The site and principal are taken from the caller's context (the
    current site and interaction) unless ``site`` or ``user`` say
    otherwise; the database from the site, else from the first persistent
    argument, else ``db``.  A site or argument added in the caller's
    transaction is resolved by OID when that transaction commits.
    Persistent objects in ``args`` and ``kwargs`` (at any depth of lists,
    tuples, sets and dicts) are passed by OID and loaded in the job's own
    connection.

    With ``after_commit`` (the default) the job waits for the commit of
    the current transaction of ``transaction_manager`` (default: the
    manager of the connection the site and arguments live in, else the
    thread's), and is dropped if that transaction aborts or the savepoint
    it was submitted after is rolled back; otherwise it is queued at once.

    ArgumentTypeError or ConfigurationError for arguments that cannot
    work; PrincipalRequired when no user is named and the site checks
    security.  Nothing is queued or recorded then.
    """
    _check_callable(fn, args, kwargs)
    owner = getattr(fn, '__self__', None)
    if isinstance(fn, Persistent) or isinstance(owner, Persistent):
        raise ArgumentTypeError(
            '%r belongs to a persistent object of the caller\'s connection; '
            'pass a plain function and the object as an argument' % (fn,))
    if note is not None and not isinstance(note, str):
        raise ArgumentTypeError('note must be a str or None, not %r'
                                % (note,))
    check_principal_id(user)
    if db is not None and not callable(getattr(db, 'open', None)):
        raise ConfigurationError(
            'expected a ZODB database (an object with open()), got %r; '
            'pass connection.db() or the DB you opened' % (db,))
    if site is None:
        site = getSite()
    if site is not None and not is_site(site):
        raise NotASite(not_a_site_message(site))
    if site is not None and not isinstance(site, Persistent) and getattr(
            site, '_p_jar', None) is None:
        raise ConfigurationError(
            'the site %r is not a persistent object, so background work '
            'cannot load it again; pass a site stored in the database' % (
                site,))
    found = []
    args = _map(tuple(args), lambda obj: found.append(obj) or _Ref(obj))
    kwargs = _map(dict(kwargs or {}),
                  lambda obj: found.append(obj) or _Ref(obj))
    if user is None:
        user = current_principal_id()
    check_user_for_site(user, site)

    store = get_job_store()
    job_id = new_id()
    name = _name(fn)
    job = _Job(job_id, fn, name, args, kwargs,
               note or 'job %s (%s)' % (name, job_id), store)
    if found:
        job.refs = _collect_refs(args, kwargs)
        job.by_oid = True
    job.principal_id = user
    job.retry_policy = retry_policy
    objects = ([site] if site is not None else []) + found
    job.db = _database(objects, db)
    if site is not None:
        job.site = _Ref(site)
    elif job.db is None:
        raise ConfigurationError(
            'cannot tell which database the job works on: there is no '
            'current site, no site=, no stored persistent argument and no '
            'db=; pass db= (and site=) explicitly')
    check_retry_policy(retry_policy)
    if after_commit:
        manager = _choose_manager(objects, transaction_manager)
        _track(job, states.PENDING_COMMIT)
        aftercommit.schedule(manager, lambda: _after_commit(job, scheduler),
                             lambda: _drop(job))
    else:
        _track(job, states.QUEUED)
        _dispatch(job, scheduler)
    return job_id


def _collect_refs(args, kwargs):
    refs = []
    _unmap((args, kwargs), lambda ref: refs.append(ref) or ref)
    return refs


def _database(objects, db):
    """The job's database, where it can be known before the commit: the
    one ``objects`` are stored in and ``db`` names."""
    return _agreed(
        [obj._p_jar.db() for obj in objects
         if getattr(obj, '_p_jar', None) is not None], db,
        'the site, the persistent arguments and db= of the job belong to '
        'different databases; a job works on one database: pass objects of '
        'that database only')


def _track(job, state):
    shutdown.arm_exit_hook()
    job.store.add(job.id, job.name, state, principal=job.principal_id)
    with _live_lock:
        _live[job.id] = job


def _forget(job):
    with _live_lock:
        _live.pop(job.id, None)


def _after_commit(job, scheduler):
    if job.store.transition(job.id, states.QUEUED):  # not cancelled
        _dispatch(job, scheduler)
    else:
        _forget(job)


def _drop(job):
    job.store.transition(job.id, states.DROPPED)
    _forget(job)


def _dispatch(job, scheduler):
    try:
        job.resolve()
        (scheduler or get_scheduler()).start(_run, (job,))
    except Exception as exc:
        _fail(job, exc)
        _forget(job)
        raise


def _fail(job, exc, state=states.FAILED):
    job.store.transition(
        job.id, state, error='%s: %s' % (type(exc).__name__, exc),
        traceback=''.join(traceback.format_exception(exc)))


def _run(job):
    """Run the job in this (pool) thread, inside its unit of work."""
    store = job.store
    try:
        if not store.transition(job.id, states.RUNNING, attempts=1,
                                started=states._now()):
            return  # cancelled while queued
        token = _current_job.set(job)
        try:
            with captured(lambda text: store.write(job.id, text)):
                _run_unit(job)
        finally:
            _current_job.reset(token)
    finally:
        _forget(job)


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
                         result=_result_oids(result))


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
    load = lambda ref: ref.load(conn)  # noqa: E731
    return job.fn(*_unmap(job.args, load), **_unmap(job.kwargs, load))


class _RunningJobs:
    """The unfinished jobs, as a runner of :mod:`cipher.background.shutdown`:
    a stop cancels the queued ones and asks the running ones to stop."""

    def request_stop(self):
        with _live_lock:
            jobs = list(_live.values())
        for job in jobs:
            _cancel(job.store, job.id, job)
        with _defaults_lock:
            scheduler, _defaults['scheduler'] = _defaults['scheduler'], None
        if scheduler is not None:
            scheduler.shutdown(wait=False, cancel_futures=True)

    def join(self, deadline):
        with _live_lock:
            jobs = list(_live.values())
        alive = []
        for job in jobs:
            try:
                job.store.wait(job.id, shutdown.remaining(deadline))
            except WaitTimeout:
                alive.append(job.id)
        return alive


shutdown.register(_RunningJobs())


# -- inside a job --

def _current():
    job = _current_job.get()
    if job is None:
        raise NotInJob('this works only inside a running job (started with '
                       'perform() or submit())')
    return job


def current_job():
    """The status of the job running in this thread, or None."""
    job = _current_job.get()
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
    the database; inside a unit of work that is the unit's own
    :func:`~cipher.background.context.renew_transaction`.  Returns the
    object; WaitTimeout after ``tries``.
    """
    in_unit = True
    if connection is None:
        connection = current_connection()
    else:
        try:
            in_unit = current_connection() is connection
        except NotInUnit:
            in_unit = False
    for attempt in range(tries):
        try:
            found = (find(connection) if callable(find)
                     else connection.get(find))
        except (POSKeyError, KeyError):
            found = None
        if found is not None:
            return found
        if attempt + 1 < tries:
            if in_unit:
                renew_transaction()
            else:
                transaction.abort()
            time.sleep(interval)
            if _current_job.get() is not None:
                check_cancelled()
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
    told, and stops at its next set_progress() or check_cancelled() (or
    at once, when it is waiting to retry).  Returns True if the job could
    be cancelled, False if it had finished or is unknown."""
    with _live_lock:
        job = _live.get(job_id)
    return _cancel(get_job_store(), job_id, job)


def _cancel(store, job_id, job):
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
