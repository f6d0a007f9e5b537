"""Durable jobs: stored in the database in the caller's transaction, run
by any process that serves the queue, exactly once.

:func:`enqueue` is :func:`~cipher.background.jobs.perform` made durable:
the job is a :class:`~cipher.background.queuestore.DurableJob` record
written through the caller's connection, so it exists if and only if the
caller's transaction commits, and a runner
(:class:`~cipher.background.queuerunner.QueueRunner`, or the
``cipher-background jobs`` command) commits its effects and its "done"
together.

A durable job id reads ``HEX@DATABASE``: the database name
(``db.database_name``) tells :func:`get_status`, :func:`wait`,
:func:`cancel` and :func:`get_progress` of :mod:`cipher.background.jobs`
where to look; a process learns a database when it enqueues, runs a
queue, or calls :func:`register_database`.
"""
import collections
import contextlib
import datetime
import importlib
import inspect
import io
import pickle
import pickletools
import random
import threading
import time
import weakref

import transaction
from persistent import Persistent
from ZODB.POSException import ReadOnlyError
from zope.interface import implementer

from cipher.background import queuestore
from cipher.background._jobargs import Ref
from cipher.background._jobargs import to_refs
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import WaitTimeout
from cipher.background.host import get_host
from cipher.background.interfaces import IJobListing
from cipher.background.jobstore import JobStatus
from cipher.background.jobstore import select
from cipher.background.jobstore import site_path
from cipher.background.scheduler import _check_callable
from cipher.background.scope import CommitWatch
from cipher.background.scheduler import new_id
from cipher.background.security import check_principal_id
from cipher.background.sites import database_identity

#: Attempts of a job that raises, unless told otherwise.
DEFAULT_ATTEMPTS = 3
#: Seconds before the second attempt; doubled for each one after it.
DEFAULT_BACKOFF = 5.0
#: Seconds a runner may hold a job before another may take it again.
DEFAULT_LEASE = 300.0
#: The shortest and longest intervals of a schedule, and the longest
#: delay, backoff or lease: beyond them a time is an error, not a wish.
MIN_EVERY = 0.01
MAX_SECONDS = 10 * 365 * 24 * 3600

_databases = {}  # database name -> the live DB objects of that name
_databases_lock = threading.Lock()


def register_database(db):
    """Let this process answer for the durable jobs of ``db`` (done for
    you by :func:`enqueue` and by the runners).  Several databases of one
    name (``db.database_name``) are all asked."""
    with _databases_lock:
        _databases.setdefault(db.database_name, weakref.WeakSet()).add(db)


def is_durable_id(job_id):
    return isinstance(job_id, str) and '@' in job_id


def _databases_of(job_id):
    """The databases that may hold ``job_id`` (all of its name)."""
    name = job_id.split('@', 1)[1]
    with _databases_lock:
        found = list(_databases.get(name, ()))
    if not found:
        raise ConfigurationError(
            'no database %r is known to this process for the durable job %s:'
            ' call cipher.background.durable.register_database(db) first'
            % (name, job_id))
    return found


def _find(job_id, root):
    """(queue, record) of ``job_id`` in ``root``, or (None, None)."""
    for queue in (queuestore.queues(root) or {}).values():
        record = queue.jobs.get(job_id)
        if record is not None:
            return queue, record
    return None, None


# -- in the caller --

def enqueue(fn, *args, **kwargs):
    """Store the job ``fn(*args, **kwargs)`` in the caller's transaction;
    return its id.  See :func:`enqueue_call` for the rules and options."""
    return enqueue_call(fn, args, kwargs)


def enqueue_call(fn, args=(), kwargs=None, *, site=None, user=None,
                 connection=None, queue=queuestore.DEFAULT_QUEUE,
                 delay=None, run_at=None, attempts=DEFAULT_ATTEMPTS,
                 backoff=DEFAULT_BACKOFF, lease=DEFAULT_LEASE, note=None):
    """Store a durable job in the caller's transaction; return its id.

    ``fn`` is referred to by its importable name: a module-level function
    or class, a method of one, or a method of a persistent object
    (stored by reference).  Lambdas, nested functions and methods of
    other objects are refused (ArgumentTypeError), because another
    process could not find them.  ``args`` and ``kwargs`` hold picklable
    values and persistent objects (stored by reference, at any depth; an
    object not yet in the database is stored with the job).

    The site and principal are taken as by ``perform()``; the record is
    written through the connection of the site, else of the first
    persistent argument, else ``connection``.  ``delay`` (seconds) or
    ``run_at`` (a timezone-aware datetime, or seconds since the epoch)
    hold the job back; a job that raises is attempted ``attempts`` times
    in all, ``backoff`` seconds after the first failure and twice as long
    after each one after it (never sleeping in a runner's thread); the
    runner that runs it renews its ``lease`` (seconds) while it runs, and
    another runner takes it again when a lease passes with no renewal
    (the process died).
    """
    conn, fields = _capture(fn, args, kwargs, site, user, connection, queue,
                            attempts, backoff, lease, note)
    when = _run_at(delay, run_at)
    job_id = new_job_id(conn.db())
    fields['note'] = note or 'job %s (%s)' % (fields['name'], job_id)
    record = queuestore.DurableJob(job_id, run_at=when, **fields)
    _store(conn, queue, lambda stored: stored.add(record))
    return job_id


def new_job_id(db):
    """A fresh durable job id: ``HEX@DATABASE``."""
    return '%s@%s' % (new_id(), db.database_name)


def _capture(fn, args, kwargs, site, user, connection, queue, attempts,
             backoff, lease, note):
    """Check what a durable job is made of and capture the caller's
    footing: the connection to store it through, and the fields of its
    record."""
    _check_callable(fn, args, kwargs)
    if note is not None and not isinstance(note, str):
        raise ArgumentTypeError('note must be a str or None, not %r'
                                % (note,))
    if not isinstance(queue, str) or not queue:
        raise ArgumentTypeError('queue must be a non-empty str, not %r'
                                % (queue,))
    _check_whole('attempts', attempts, 1)
    for name, value in (('backoff', backoff), ('lease', lease)):
        _check_seconds(name, value)
    if lease <= 0:
        raise ConfigurationError('lease must be more than 0 seconds')
    check_principal_id(user)
    host = get_host()
    if site is None:
        site = host.current_site()
    if site is not None and not host.is_site(site):
        raise NotASite(host.not_a_site_message(site))
    if site is not None and getattr(site, '_p_jar', None) is None:
        # Made in the caller's transaction: a savepoint gives it its jar.
        database_identity(site, 'site', host.transaction_manager()
                          or transaction.manager)
    found = []

    def ref(obj):
        found.append(obj)
        return Ref(obj, host.locate(obj))

    call = _call_reference(fn, ref)
    args = to_refs(tuple(args), ref)
    kwargs = to_refs(dict(kwargs or {}), ref)
    _check_picklable(args, kwargs)
    if user is None:
        user = host.current_user()
    host.check_user(user, site)
    conn = _connection(site, found, connection)
    return conn, dict(
        name=_display_name(fn), call=call, args=args, kwargs=kwargs,
        site=Ref(site, host.locate(site)) if site is not None else None,
        principal=user, note=note, attempts=attempts,
        backoff=float(backoff), lease=float(lease), queue=queue)


def _store(conn, queue, change):
    """``change(JobQueue)`` through ``conn``, in its current transaction;
    the runners of this process are woken when it commits."""
    change(queuestore.get_queue(conn.root(), queue, create=True))
    db = conn.db()
    register_database(db)
    conn.transaction_manager.get().addAfterCommitHook(
        lambda committed: committed and _wake(db, queue))


# -- schedules --

def schedule(fn, args=(), kwargs=None, *, every=None, cron=None,
             name=None, start_at=None, site=None, user=None,
             connection=None, queue=queuestore.DEFAULT_QUEUE,
             attempts=DEFAULT_ATTEMPTS, backoff=DEFAULT_BACKOFF,
             lease=DEFAULT_LEASE, note=None):
    """Store a schedule in the caller's transaction: a durable job
    ``fn(*args, **kwargs)`` at each slot, ``every`` seconds (the first at
    ``start_at``, default now) or at the times of the ``cron`` expression
    (five fields, UTC; needs the ``cron`` extra).  Each slot fires once,
    whatever number of processes serve the queue; slots missed while no
    runner ran fire once, together.  The other options are those of
    :func:`enqueue_call`.  A schedule of the same ``name`` (default: the
    function's name) is replaced.  Returns the name.
    """
    if (every is None) == (cron is None):
        raise ArgumentTypeError('give every= (seconds) or cron= (an '
                                'expression such as "*/5 * * * *"), one '
                                'of them')
    now = time.time()
    if every is not None:
        _check_seconds('every', every)
        if not MIN_EVERY <= every <= MAX_SECONDS:
            raise ArgumentTypeError('every must be from %g to %d seconds, '
                                    'not %r' % (MIN_EVERY, MAX_SECONDS,
                                                every))
        first = _run_at(None, start_at) or now
    else:
        if start_at is not None:
            raise ArgumentTypeError('start_at goes with every=, not cron=')
        if not isinstance(cron, str):
            raise ArgumentTypeError('cron must be a str such as '
                                    '"*/5 * * * *", not %r' % (cron,))
        first = queuestore.next_cron_time(cron, now)
    conn, fields = _capture(fn, args, kwargs, site, user, connection, queue,
                            attempts, backoff, lease, note)
    name = name or fields['name']
    if not isinstance(name, str) or not name:
        raise ArgumentTypeError('name must be a non-empty str, not %r'
                                % (name,))
    record = queuestore.Schedule(name, fields, every, cron, first)
    _store(conn, queue, lambda stored: stored.add_schedule(record))
    return name


def unschedule(name, connection, queue=queuestore.DEFAULT_QUEUE):
    """Remove the schedule ``name`` in the caller's transaction; True when
    there was one."""
    if not isinstance(name, str) or not callable(
            getattr(connection, 'root', None)):
        raise ArgumentTypeError(
            'unschedule(name, connection) takes the name of the schedule '
            '(a str) and a ZODB connection, not %r and %r'
            % (name, connection))
    stored = queuestore.get_queue(connection.root(), queue)
    return stored is not None and stored.remove_schedule(name)


def scheduled_job(schedule, slot, db):
    """The job of ``schedule`` for the slot at ``slot`` (a runner calls
    this in its claim transaction)."""
    job_id = new_job_id(db)
    fields = dict(schedule.fields)
    fields['note'] = fields['note'] or 'scheduled job %s (%s, slot %s)' % (
        schedule.name, job_id, _time(slot).isoformat())
    job = queuestore.DurableJob(job_id, **fields)
    job.slot = slot
    job.schedule = schedule.name
    return job


def _check_whole(name, value, least):
    if isinstance(value, bool) or not isinstance(value, int) \
            or value < least:
        raise ArgumentTypeError('%s must be a whole number >= %d, not %r'
                                % (name, least, value))


def _check_seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= MAX_SECONDS:
        raise ArgumentTypeError('%s must be a number of seconds from 0 to '
                                '%d, not %r' % (name, MAX_SECONDS, value))


def _run_at(delay, run_at):
    if delay is not None and run_at is not None:
        raise ArgumentTypeError('give delay or run_at, not both')
    if delay is not None:
        _check_seconds('delay', delay)
        return time.time() + delay
    if isinstance(run_at, datetime.datetime):
        if run_at.tzinfo is None:
            raise ArgumentTypeError(
                'run_at must be a timezone-aware datetime (other processes '
                'may live in other time zones), not %r' % (run_at,))
        return run_at.timestamp()
    if run_at is not None:
        if isinstance(run_at, bool) or not isinstance(
                run_at, (int, float)) or not 0 <= run_at < float('inf'):
            raise ArgumentTypeError('run_at must be a timezone-aware '
                                    'datetime or seconds since the epoch, '
                                    'not %r' % (run_at,))
        return float(run_at)
    return None


def _display_name(fn):
    return '%s.%s' % (getattr(fn, '__module__', '?'),
                      getattr(fn, '__qualname__', repr(fn)))


def _call_reference(fn, ref):
    """What the record keeps of ``fn``: ``('name', 'module:qualname')`` or
    ``('method', Ref, name)`` for a method of a persistent object."""
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn) \
            or inspect.isasyncgenfunction(fn):
        raise ArgumentTypeError(
            '%r is a generator or coroutine function: a job must do its '
            'work when called; wrap it in a plain function' % (fn,))
    owner = getattr(fn, '__self__', None)
    if isinstance(owner, Persistent):
        return ('method', ref(owner), fn.__func__.__name__)
    module = getattr(fn, '__module__', None)
    qualname = getattr(fn, '__qualname__', None)
    refused = ArgumentTypeError(
        'a durable job is run by name in another process, so %r cannot be '
        'one: pass a module-level function (or class, or a method of one, '
        'or of a persistent object) of an importable module, not a lambda, '
        'a nested function, a partial, a method of a plain object or '
        'anything of __main__' % (fn,))
    if not module or not qualname or '<' in qualname \
            or module == '__main__':
        raise refused
    dotted = '%s:%s' % (module, qualname)
    try:
        found = resolve(dotted)
    except (ImportError, AttributeError):
        raise refused from None
    if found != fn:
        raise refused
    return ('name', dotted)


def resolve(dotted):
    """The object ``'module:qualname'`` names."""
    module, _, qualname = dotted.partition(':')
    obj = importlib.import_module(module)
    for part in qualname.split('.'):
        obj = getattr(obj, part)
    return obj


def _check_picklable(args, kwargs):
    """ArgumentTypeError unless the arguments pickle (persistent objects
    by reference, as the database stores them)."""
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, 3)
    pickler.persistent_id = (
        lambda obj: id(obj) if isinstance(obj, Persistent) else None)
    try:
        pickler.dump((args, kwargs))
    except Exception as exc:
        raise ArgumentTypeError(
            'the arguments of a durable job are stored in the database, so '
            'they must be picklable values and persistent objects: %s' % exc
        ) from None
    for opcode, arg, _ in pickletools.genops(stream.getvalue()):
        if opcode.name == 'GLOBAL' and arg.split(' ', 1)[0] == '__main__':
            raise ArgumentTypeError(
                'an argument of a durable job is an instance of %s, which '
                'another process cannot import (it lives in __main__): '
                'define it in a module' % arg.replace(' ', '.'))


def _connection(site, found, connection):
    jars = [obj._p_jar for obj in ([site] if site is not None else [])
            + found if getattr(obj, '_p_jar', None) is not None]
    if connection is not None:
        if not callable(getattr(connection, 'root', None)):
            raise ArgumentTypeError('connection must be a ZODB connection, '
                                    'not %r' % (connection,))
        jars.append(connection)
    if not jars:
        raise ConfigurationError(
            'a durable job is stored through a connection, and there is no '
            'stored site, no stored persistent argument and no '
            'connection=: pass connection= (the one your request uses)')
    if any(jar.db() is not jars[0].db() for jar in jars):
        raise ConfigurationError(
            'the site, the persistent arguments and connection= belong to '
            'different databases; a durable job lives in one database')
    if any(jar is not jars[0] for jar in jars):
        raise ConfigurationError(
            'the site, the persistent arguments and connection= come from '
            'different connections; a durable job is stored in the '
            "caller's transaction through one: load them all through the "
            "caller's connection")
    return jars[0]


# -- waking the runners of this process --

_runners = {}  # (database name, queue) -> set of runners
_runners_lock = threading.Lock()


def add_runner(db, queue, runner):
    register_database(db)
    with _runners_lock:
        _runners.setdefault((db.database_name, queue), set()).add(runner)


def remove_runner(db, queue, runner):
    with _runners_lock:
        _runners.get((db.database_name, queue), set()).discard(runner)


def _wake(db, queue):
    with _runners_lock:
        runners = list(_runners.get((db.database_name, queue), ()))
    for runner in runners:
        runner.wake()


# -- status, from any process --

def _read(job_id, read):
    """``read(queue, record)`` for the record of ``job_id`` in a fresh
    connection of its database (both None when unknown)."""
    return _look(job_id, read)[1]


def _look(job_id, read):
    """(db, ``read(queue, record)``) for the open database of this process
    that holds ``job_id``; (None, ``read(None, None)``) when none does.

    The id may come from another process (a ZEO client behind the same
    load balancer, say) whose commit this process's ZEO client has not
    heard of yet: ZEO tells its clients of a commit asynchronously.  So
    when no database holds the record, each is made to catch up with its
    server and asked again; only then is the job unknown."""
    databases = _databases_of(job_id)
    for looked_before in (False, True):
        for db in databases:
            found = _read_in(db, job_id, read)
            if found is not _NOT_HERE:
                return db, found
        if looked_before or not any([_catch_up(db) for db in databases]):
            return None, read(None, None)


_NOT_HERE = object()


def _catch_up(db):
    """Make a fresh connection of ``db`` see every transaction committed
    before this call; True when that took something.  A ZEO client asks
    its server (``ping`` is a round trip, and its answer comes after the
    invalidations sent before it, which are applied in order); the other
    storages see every commit at the start of a transaction already."""
    ping = getattr(db.storage, 'ping', None)  # a connected ZEO client
    if ping is None:
        return False
    try:
        ping()
    except Exception:  # disconnected: there is nothing more to learn
        return False
    return True


def requeue(job_id):
    """Run the durable job ``job_id`` again, if it ended failed, cancelled
    or outcome-unknown: it waits in its queue as a new job would, its
    attempts counted from none.  True when it was requeued, False when it
    is unknown or ended otherwise (``succeeded`` is never run again)."""
    def requeue_in(root, now):
        queue, record = _find(job_id, root)
        if record is not None and queue.requeue(record):
            return record.queue
        return None
    db = _look(job_id, lambda queue, record: None)[0]
    queue = None if db is None else in_transaction(
        db, requeue_in, 'cipher.background: requeue %s' % job_id)
    if queue:
        _wake(db, queue)  # its runners in this process
    return bool(queue)


def _read_in(db, job_id, read):
    """``read(queue, record)`` in a fresh connection of ``db``; _NOT_HERE
    when it does not hold the record (or is closed)."""
    with contextlib.ExitStack() as stack:
        try:
            root = stack.enter_context(_snapshot(db))
        except Exception:  # a closed database of that name
            return _NOT_HERE
        queue, record = _find(job_id, root)
        return _NOT_HERE if record is None else read(queue, record)


@contextlib.contextmanager
def _snapshot(db):
    """The root of ``db`` as committed now, in a connection of its own
    (and a transaction manager of its own), for reading only."""
    manager = transaction.TransactionManager()
    conn = db.open(transaction_manager=manager)
    try:
        yield conn.root()
    finally:
        manager.abort()
        conn.close()


@implementer(IJobListing)
class DurableJobs:
    """The jobs of the durable queue ``queue`` of ``db``, as committed
    when asked (each call reads in a connection of its own): listed,
    counted and looked up like those of this process's job store."""

    def __init__(self, db, queue=queuestore.DEFAULT_QUEUE):
        if not callable(getattr(db, 'open', None)):
            raise ArgumentTypeError('expected a ZODB database, not %r'
                                    % (db,))
        if not isinstance(queue, str) or not queue:
            raise ArgumentTypeError('queue must be a non-empty str, not %r'
                                    % (queue,))
        self.db, self.queue = db, queue
        register_database(db)

    def __repr__(self):
        return '<DurableJobs %r of %s>' % (self.queue, self.db.database_name)

    def list(self, state=None, principal=None, name=None, limit=100,
             site=None):
        """See IJobListing."""
        with _snapshot(self.db) as root:
            queue = queuestore.get_queue(root, self.queue)
            records = () if queue is None else queue.jobs.values()
            chosen = select(records, state, principal, name, limit,
                            created=lambda record: record.created, site=site)
            return [status_of(record.id, queue, record) for record in chosen]

    def counts(self, site=None):
        """See IJobListing."""
        with _snapshot(self.db) as root:
            queue = queuestore.get_queue(root, self.queue)
            if queue is None:
                return {}
            return dict(collections.Counter(
                record.state for record in select(
                    queue.jobs.values(), site=site, limit=None)))

    def get(self, job_id):
        """See IJobListing (a job of this queue only)."""
        with _snapshot(self.db) as root:
            queue = queuestore.get_queue(root, self.queue)
            record = None
            if queue is not None and isinstance(job_id, str):
                record = queue.jobs.get(job_id)
            return status_of(job_id, queue, record)


def _time(seconds):
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def status_of(job_id, queue, record):
    """The JobStatus of ``record`` (None: unknown) in ``queue``."""
    if record is None:
        return JobStatus(job_id)
    progress = queue.progress.get(job_id) if queue is not None else None
    value, data = progress if progress is not None else (None, None)
    return JobStatus(
        job_id, record.state, record.name, value, data, '',
        record.result, record.error, record.traceback, record.attempts,
        queue.cancel_requested(job_id), _time(record.created),
        _time(record.started), _time(record.finished), record.principal,
        None if record.site is None else site_path(record.site.hint))


def get_status(job_id):
    """The JobStatus of the durable job ``job_id`` as committed now."""
    return _read(job_id,
                 lambda queue, record: status_of(job_id, queue, record))


_settled = threading.Condition()
_settled_count = 0  # jobs settled by the runners of this process


def notify_settled():
    """Wake the waiters of this process: a runner here settled a job."""
    global _settled_count
    with _settled:
        _settled_count += 1
        _settled.notify_all()


def wait(job_id, timeout=None, poll=0.05):
    """The final status of ``job_id``; WaitTimeout when ``timeout``
    seconds pass first.  Reads the database when a runner of this process
    settles a job, and every ``poll`` seconds (for the other
    processes)."""
    if timeout is not None:
        _check_seconds('timeout', timeout)
    _check_seconds('poll', poll)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        settled = _settled_count  # a job settled while we read: read again
        status = get_status(job_id)
        if status.done:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout('the durable job %s is still %s after %ss'
                              % (job_id, status.state, timeout))
        with _settled:
            if _settled_count == settled:
                _settled.wait(poll)


def cancel(job_id):
    """Cancel the durable job ``job_id``: a waiting one is removed from its
    queue, a running one is told (its next set_progress() or
    check_cancelled() raises JobCancelled).  True when it could be
    cancelled, False when it had finished or is unknown."""
    def cancel_in(root, now):
        queue, record = _find(job_id, root)
        return record is not None and queue.cancel(record, now)
    db = _look(job_id, lambda queue, record: None)[0]
    return db is not None and in_transaction(
        db, cancel_in, 'cipher.background: cancel %s' % job_id)


#: Attempts of a queue's own transaction (a claim, a cancel) that
#: conflicts, before giving up.
_ATTEMPTS = 20


def in_transaction(db, fn, note):
    """``fn(root, now)`` in a transaction of its own (a connection of
    ``db``, a manager of its own), committed with ``note``; conflicts, and
    any failure of the commit before its vote (nothing was committed) but
    a read-only database, are retried with a short random backoff.
    Returns what ``fn`` returns.  A failure after the vote is raised: its
    outcome is unknown."""
    manager = transaction.TransactionManager()
    for attempt in range(_ATTEMPTS):
        conn = db.open(transaction_manager=manager)
        committing = False
        try:
            manager.begin()
            watch = CommitWatch(manager)
            watch.ours = True
            manager.get().join(watch)
            result = fn(conn.root(), time.time())
            manager.get().note(note)
            committing = True
            manager.commit()
            return result
        except Exception as exc:
            retry = manager.get().isRetryableError(exc) or (
                committing and not watch.voted
                and not isinstance(exc, ReadOnlyError))
            manager.abort()
            if not retry:
                raise
        finally:
            conn.close()
        time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
    raise ConfigurationError('%s: conflicted %d times in a row; the queue is '
                             'too busy' % (note, _ATTEMPTS))
