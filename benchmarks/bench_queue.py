"""Workload 8: durable jobs (enqueue() and the queue runners), beside
Huey (SqliteHuey) and Celery (a real redis-server) when the ``bench``
extra is installed.

Enqueue overhead: a request-like transaction on FileStorage (change one
object, or twenty as an edit that reindexes would, and commit), with and
without an enqueue() in it; the ratio is the request's rate with the job
against without it.  Huey's and Celery's are the same request followed
by a task sent after its commit (the way to dispatch a ZODB
application's task to a broker without running it before the commit).

Commit -> start latency: from the end of the caller's commit to the job's
first line.  In-process: a QueueRunner thread, woken at the commit; Huey
with a thread consumer; Celery with a worker thread of this process.
Across processes: a `cipher-background jobs` process on a ZEO server,
polling every 50 ms.

Recovery after SIGKILL: two runner processes on ZEO, a job with a lease
of 2 s in one of them, that process killed: the time from the kill to the
job's start in the other.  Celery's: two worker processes (acks_late),
a visibility timeout of 2 s (its default is an hour).

Throughput: no-op durable jobs per second with 1, 2 and 4 runner
processes of 2 threads each, from the first start to the last finish, on
ZEO and on RelStorage with SQLite.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time

import transaction
import zodburi
from _common import Counter, RedisServer, ZEOServer, options, percentile
from _common import report, temporary_folder
from ZODB import DB
from ZODB.FileStorage import FileStorage

import _queuejobs
from cipher.background import SYSTEM, QueueRunner, enqueue_call, get_status
from cipher.background.queuestore import get_queue

HERE = os.path.dirname(os.path.abspath(__file__))
EDIT_OBJECTS = 20


# -- enqueue overhead --

def request_rate(db, count, objects, dispatch=None):
    """Request-like transactions per second, each changing ``objects``
    counters; ``dispatch(conn)`` is called before the commit (enqueue) or,
    with no argument, after it (a broker)."""
    conn = db.open()
    counters = [conn.root()['counter%d' % n] for n in range(objects)]
    began = time.perf_counter()
    for _ in range(count):
        for counter in counters:
            counter.value += 1
        if dispatch is enqueue_noop:
            dispatch(conn)
        transaction.commit()
        if dispatch is not None and dispatch is not enqueue_noop:
            dispatch()
    rate = count / (time.perf_counter() - began)
    conn.close()
    return rate


def enqueue_noop(conn):
    enqueue_call(_queuejobs.noop, connection=conn, user=SYSTEM)


def enqueue_overhead(folder, reps, requests, celery):
    db = DB(FileStorage(os.path.join(folder, 'Data.fs')))
    with db.transaction() as conn:
        for n in range(EDIT_OBJECTS):
            conn.root()['counter%d' % n] = Counter()
    huey = None
    if _installed('huey'):
        from huey import SqliteHuey
        huey = SqliteHuey(filename=os.path.join(folder, 'huey-requests.db'))
        huey_noop = huey.task()(_queuejobs.noop)
    for objects in (1, EDIT_OBJECTS):
        with_job, with_huey, with_delay, without = [], [], [], []
        for _ in range(reps):
            without.append(request_rate(db, requests, objects))
            with_job.append(request_rate(db, requests, objects,
                                         enqueue_noop))
            if huey is not None:
                with_huey.append(request_rate(db, requests, objects,
                                              huey_noop))
            if celery is not None:
                with_delay.append(request_rate(db, requests, objects,
                                               celery.noop.delay))
        report('8. request changing %d object(s) + enqueue()' % objects,
               'req/s', with_job, without, target=0.9)
        if huey is not None:
            report('   the same + a Huey (SqliteHuey) task after the commit',
                   'req/s', with_huey, without)
            huey.flush()
        if celery is not None:
            report('   the same + Celery delay() after the commit',
                   'req/s', with_delay, without)
            celery.app.control.purge()
    QueueRunner(db).run_pending()  # the jobs those requests enqueued
    return db


# -- commit -> start --

def commit_to_start(db, count, wait, local=False):
    """Milliseconds from the end of the commit to the job's first line;
    ``wait(job_id)`` waits for the job (after its start, when it runs in
    this process: ``local``)."""
    conn = db.open()
    latencies = []
    for _ in range(count):
        _queuejobs.started.clear()
        for attempt in transaction.manager.attempts():  # as a web app does
            with attempt:
                job_id = enqueue_call(_queuejobs.started_at,
                                      connection=conn, user=SYSTEM)
        committed = time.time()
        if local:
            _queuejobs.started.wait(60)
        status = wait(job_id)
        latencies.append((status.result - committed) * 1e3)
    conn.close()
    return latencies


def huey_latencies(folder, count):
    """The same for Huey: SqliteHuey, one thread worker in this process."""
    from huey import SqliteHuey
    huey = SqliteHuey(filename=os.path.join(folder, 'huey.db'))
    task = huey.task()(_queuejobs.started_at)
    consumer = huey.create_consumer(workers=1, worker_type='thread',
                                    periodic=False, initial_delay=0.001,
                                    backoff=1.0, max_delay=0.001)
    consumer.start()  # its worker threads, without its signal handlers
    try:
        return [_latency(task, lambda result: result.get(
            blocking=True, timeout=60)) for _ in range(count)]
    finally:
        consumer.stop(graceful=True)


def celery_latencies(celery, count):
    """The same for Celery: a worker thread of this process, on redis."""
    from celery.contrib.testing.worker import start_worker
    with start_worker(celery.app, pool='solo', perform_ping_check=False,
                      loglevel='WARNING', shutdown_timeout=60):
        return [_latency(celery.started_at.delay,
                         lambda result: result.get(timeout=60))
                for _ in range(count)]


def _latency(send, get):
    """The same, for a task ``send()`` after a commit, run in this
    process, its result read with ``get``."""
    _queuejobs.started.clear()
    sent = time.time()
    result = send()
    _queuejobs.started.wait(60)
    return (get(result) - sent) * 1e3


def in_process_latency(db, folder, reps, samples, celery):
    runner = QueueRunner(db, threads=1).start()
    local = [percentile(commit_to_start(db, samples, _wait_local, True),
                        0.5)
             for _ in range(reps)]
    runner.stop(60)
    report('8. commit -> durable job start p50, in-process', 'ms',
           local, target_ms=1.0)
    if _installed('huey'):
        report('   Huey (SqliteHuey), thread consumer', 'ms',
               [percentile(huey_latencies(folder, samples), 0.5)
                for _ in range(reps)])
    if celery is not None:
        report('   Celery (redis), worker thread', 'ms',
               [percentile(celery_latencies(celery, samples), 0.5)
                for _ in range(reps)])


def _wait_local(job_id):
    from cipher.background import wait
    return wait(job_id, 120)


def durable_wait(job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status = get_status(job_id)
        if status.done:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError('job %s is still %s' % (job_id, status.state))
        time.sleep(0.001)  # another process runs it: look again soon


# -- runner processes --

def runner_processes(uri, number, poll, threads=2):
    return [subprocess.Popen(
        [sys.executable, '-m', 'cipher.background', 'jobs', '--zodb', uri,
         '--threads', str(threads), '--poll', str(poll), '--max-poll',
         str(poll)],
        cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(number)]


def stop(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(120)


def throughput(db, uri, processes, count):
    conn = db.open()
    for _ in range(count):
        enqueue_call(_queuejobs.noop, connection=conn, user=SYSTEM)
    transaction.commit()
    conn.close()
    runners = runner_processes(uri, processes, 0.05)
    deadline = time.monotonic() + 300
    try:
        while True:
            conn = db.open()
            times = [(job.started, job.finished)
                     for job in get_queue(conn.root()).jobs.values()
                     if job.name.endswith('noop') and job.state
                     == 'succeeded']
            conn.close()
            if len(times) >= count:
                break
            if time.monotonic() > deadline:  # a lost job fails the run
                raise RuntimeError('%d of %d jobs did not succeed in 300 s'
                                   % (count - len(times), count))
            time.sleep(0.05)  # the runner processes work
    finally:
        stop(runners)
    with db.transaction() as conn:  # forget them for the next round
        queue = get_queue(conn.root())
        queue.prune(time.time() + 1, 0, 0)
    return count / (max(f for _, f in times) - min(s for s, _ in times))


# -- recovery after SIGKILL --

def recovery(folder, start_workers, submit):
    """Seconds from the SIGKILL of the worker process running a job to
    the job's start in another: ``start_workers(2)`` starts two worker
    processes, ``submit(marker_folder)`` sends a _queuejobs.mark_then_sleep
    job."""
    markers = os.path.join(folder, 'markers-%d' % time.monotonic_ns())
    os.mkdir(markers)
    workers = start_workers(2)
    try:
        submit(markers)
        first = _wait_for_files(markers, 1)[0]
        killed = [w for w in workers if str(w.pid) == first]
        assert killed, 'the job ran in a process not started here'
        killed[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        killed[0].wait(60)
        again = [name for name in _wait_for_files(markers, 2, 300)
                 if name != first][0]
        with open(os.path.join(markers, again)) as f:
            return float(f.read()) - killed_at
    finally:
        stop(workers)


def _wait_for_files(folder, count, timeout=120):
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError('no job started in %s s' % timeout)
        time.sleep(0.01)  # the worker processes work
    time.sleep(0.01)  # the file just listed is written in full
    return sorted(os.listdir(folder))


def durable_recovery(db, uri, folder, lease, poll):
    def submit(markers):
        with db.transaction() as conn:
            enqueue_call(_queuejobs.mark_then_sleep, (markers,), lease=lease,
                         connection=conn, user=SYSTEM)
    return recovery(folder, lambda n: runner_processes(uri, n, poll, 1),
                    submit)


def celery_recovery(celery, folder, visibility_timeout):
    def start_workers(number):
        env = dict(os.environ, BENCH_REDIS_URL=celery.app.conf.broker_url,
                   BENCH_VISIBILITY_TIMEOUT=str(visibility_timeout))
        workers = [subprocess.Popen(
            [sys.executable, '-m', 'celery', '-A', '_celerytasks', 'worker',
             '--pool', 'solo', '--without-gossip', '--without-mingle',
             '--without-heartbeat', '--loglevel', 'WARNING',
             '--hostname', 'bench%d@localhost' % n],
            cwd=HERE, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL) for n in range(number)]
        deadline = time.monotonic() + 120
        while len(celery.app.control.ping(timeout=0.5)) < number:
            if time.monotonic() > deadline:
                raise RuntimeError('the Celery workers did not start')
        return workers
    return recovery(folder, start_workers, celery.mark_then_sleep.delay)


# -- the run --

def main():
    quick = options(__doc__).quick
    reps = 3 if quick else 7
    requests, samples, jobs = (200, 30, 200) if quick else (1000, 100, 1000)
    with temporary_folder() as folder, _celery() as celery:
        db = enqueue_overhead(folder, reps, requests, celery)
        in_process_latency(db, folder, reps, samples, celery)
        db.close()

        server = ZEOServer(os.path.join(folder, 'zeo.fs'))
        try:
            uri = 'zeo://127.0.0.1:%d' % server.port
            zeo = server.db()
            remote = []
            runners = runner_processes(uri, 1, 0.05)
            try:
                for _ in range(reps):
                    latencies = commit_to_start(zeo, samples, durable_wait)
                    remote.append(percentile(latencies, 0.5))
            finally:
                stop(runners)
            report('8. commit -> durable job start p50, other process, '
                   'ZEO, poll 50 ms', 'ms', remote, target_ms=55)
            report('8. recovery after SIGKILL, ZEO, lease 2 s, poll 0.1 s',
                   's', [durable_recovery(zeo, uri, folder, 2, 0.1)
                         for _ in range(reps)], target_s=2.1)
            if celery is not None:
                # Three, not seven: each takes about 100 s (kombu looks
                # for unacknowledged messages every tenth time it wakes,
                # every 10 s), and the spread is a fraction of a second.
                report('   Celery (redis), visibility timeout 2 s', 's',
                       [celery_recovery(celery, folder, 2)
                        for _ in range(min(reps, 3))])
            for processes in (1, 2, 4):
                rates = [throughput(zeo, uri, processes, jobs)
                         for _ in range(max(1, reps // 2))]
                report('8. no-op durable jobs, ZEO, %d runner process(es)'
                       % processes, 'jobs/s', rates)
            zeo.close()
        finally:
            server.stop()

        uri = 'sqlite://?data_dir=%s' % os.path.join(folder, 'sqlite')
        factory, kwargs = zodburi.resolve_uri(uri)
        sqlite = DB(factory(), **kwargs)
        for processes in (1, 2, 4):
            rates = [throughput(sqlite, uri, processes, jobs)
                     for _ in range(max(1, reps // 2))]
            report('8. no-op durable jobs, RelStorage/SQLite, %d runner '
                   'process(es)' % processes, 'jobs/s', rates)
        sqlite.close()


def _installed(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _celery():
    """The _celerytasks module on a redis-server of its own, or None when
    Celery is not installed (pip install -e '.[bench]')."""
    if not _installed('celery'):
        yield None
        return
    redis = RedisServer()
    os.environ['BENCH_REDIS_URL'] = redis.url
    try:
        import _celerytasks
        yield _celerytasks
    finally:
        redis.stop()


if __name__ == '__main__':
    main()
