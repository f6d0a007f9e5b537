"""One-shot jobs: ``perform(fn, *args, **kwargs)`` runs a callable in the
background, in the unit-of-work context of the caller's site and user.

By default a job is handed to the scheduler only when the caller's
transaction commits, and dropped if it aborts (or if the savepoint it was
asked in is rolled back).  Its status (state, progress, output, result or
error) lives in the job store, outside the ZODB, so reporting never makes
the job's transaction conflict.  Every change of a job's state goes
through the store's transition table (:mod:`cipher.background.jobstore`).

This module is the public API; the runtime (dispatch, the run in a pool
thread, the stop story) is :mod:`cipher.background.jobruntime`, and how
persistent objects cross to the job's connection is
:mod:`cipher.background._jobargs`.
"""
import time

import transaction
from persistent import Persistent
from ZODB.POSException import POSKeyError

from cipher.background import aftercommit
from cipher.background import durable
from cipher.background import jobruntime as runtime
from cipher.background import jobstore as states
from cipher.background._jobargs import Ref
from cipher.background._jobargs import collect_refs
from cipher.background._jobargs import to_refs
from cipher.background.context import check_retry_policy
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import JobCancelled
from cipher.background.errors import NotASite
from cipher.background.errors import NotInJob
from cipher.background.errors import NotInUnit
from cipher.background.errors import WaitTimeout
from cipher.background.host import get_host
from cipher.background.jobruntime import get_job_store
from cipher.background.jobruntime import get_scheduler
from cipher.background.jobruntime import set_job_store
from cipher.background.jobruntime import set_scheduler
from cipher.background.scheduler import _check_callable
from cipher.background.scheduler import new_id
from cipher.background.scope import current_connection
from cipher.background.scope import renew_transaction
from cipher.background.security import check_principal_id

__all__ = ['perform', 'submit', 'current_job', 'check_cancelled',
           'set_progress', 'wait_for', 'get_status', 'wait', 'get_progress',
           'cancel', 'get_job_store', 'set_job_store', 'get_scheduler',
           'set_scheduler']


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


def _choose_manager(objects, transaction_manager, host):
    """The transaction manager whose commit releases the job: the one of
    the connections ``objects`` live in, which must agree with each other
    and with ``transaction_manager`` if given; else the host's (Pyramid:
    the request's), else the thread's."""
    return _agreed(
        map(_manager_of, objects), _unwrapped(transaction_manager),
        'the site and persistent arguments of the job live in connections '
        'with different transaction managers (or not the '
        'transaction_manager= given); a job is released by one commit: '
        'pass objects of one connection, and its transaction manager'
    ) or host.transaction_manager() or transaction.manager


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
    host = get_host()
    if site is None:
        site = host.current_site()
    if site is not None and not host.is_site(site):
        raise NotASite(host.not_a_site_message(site))
    if site is not None and not isinstance(site, Persistent) and getattr(
            site, '_p_jar', None) is None:
        raise ConfigurationError(
            'the site %r is not a persistent object, so background work '
            'cannot load it again; pass a site stored in the database' % (
                site,))
    found = []

    def ref(obj):
        found.append(obj)
        return Ref(obj, host.locate(obj))

    args = to_refs(tuple(args), ref)
    kwargs = to_refs(dict(kwargs or {}), ref)
    if user is None:
        user = host.current_user()
    host.check_user(user, site)

    store = get_job_store()
    job_id = new_id()
    name = runtime.callable_name(fn)
    job = runtime.Job(job_id, fn, name, args, kwargs,
                      note or 'job %s (%s)' % (name, job_id), store)
    if found:
        job.refs = collect_refs(args, kwargs)
        job.by_oid = True
    job.principal_id = user
    job.host = host
    job.retry_policy = retry_policy
    objects = ([site] if site is not None else []) + found
    job.db = _database(objects, db)
    if site is not None:
        job.site = Ref(site, host.locate(site))
    elif job.db is None:
        raise ConfigurationError(
            'cannot tell which database the job works on: there is no '
            'current site, no site=, no stored persistent argument and no '
            'db=; pass db= (and site=) explicitly')
    check_retry_policy(retry_policy)
    if not isinstance(after_commit, bool):
        raise ArgumentTypeError('after_commit must be True or False, not %r'
                                % (after_commit,))
    if scheduler is not None:
        runtime.check_scheduler(scheduler)
    if after_commit:
        manager = _choose_manager(objects, transaction_manager, host)
        aftercommit.current_transaction(manager)  # refuse before recording
        runtime.track(job, states.PENDING_COMMIT)
        aftercommit.schedule(
            manager, lambda: runtime.after_commit(job, scheduler),
            lambda: runtime.drop(job))
    else:
        runtime.track(job, states.QUEUED)
        runtime.dispatch(job, scheduler)
    return job_id


def _database(objects, db):
    """The job's database, where it can be known before the commit: the
    one ``objects`` are stored in and ``db`` names."""
    return _agreed(
        [obj._p_jar.db() for obj in objects
         if getattr(obj, '_p_jar', None) is not None], db,
        'the site, the persistent arguments and db= of the job belong to '
        'different databases; a job works on one database: pass objects of '
        'that database only')


# -- inside a job --

def _current():
    job = runtime.current_job_var.get()
    if job is None:
        raise NotInJob('this works only inside a running job (started with '
                       'perform() or submit())')
    return job


def current_job():
    """The status of the job running in this thread, or None."""
    job = runtime.current_job_var.get()
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
            if runtime.current_job_var.get() is not None:
                check_cancelled()
    raise WaitTimeout(
        '%r was not found after %d tries over %gs; the transaction that '
        'adds it may not have committed: try more tries or a longer '
        'interval' % (find, tries, tries * interval))


# -- from anywhere --

def _checked(job_id):
    if not isinstance(job_id, str):
        raise ArgumentTypeError('a job id is the str perform() returned, '
                                'not %r' % (job_id,))
    return job_id


def get_status(job_id):
    """The IJobStatus of ``job_id`` (state 'unknown' for unknown ids); a
    durable job's (see :mod:`cipher.background.durable`) as committed."""
    if durable.is_durable_id(job_id):
        return durable.get_status(job_id)
    return get_job_store().get(_checked(job_id))


def wait(job_id, timeout=None):
    """Wait until the job is finished; return its final status.

    WaitTimeout when ``timeout`` seconds pass first."""
    if durable.is_durable_id(job_id):
        return durable.wait(job_id, timeout)
    return get_job_store().wait(_checked(job_id), timeout)


def get_progress(job_id):
    """TurboGears-style progress: ``(-1, None)`` while waiting to run,
    ``(value, data)`` while running (value 0 before any report), None when
    finished or unknown."""
    status = get_status(_checked(job_id))
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
    if durable.is_durable_id(job_id):
        return durable.cancel(job_id)
    return runtime.cancel_job(get_job_store(), _checked(job_id),
                              runtime.live_job(job_id))
