"""Workload 7: durable jobs (enqueue() and the queue runners).

Enqueue overhead: a request-like transaction (change one object, commit)
on FileStorage, with and without an enqueue() in it; the ratio is the
request's rate with the job against without it.

Commit -> start latency: from the end of the caller's commit to the
first line of the job; in-process (a QueueRunner thread, woken at the
commit) and across processes (a `cipher-background jobs` process on a
ZEO server, polling every 50 ms).  Beside them, the same for Huey with
SqliteHuey and a thread consumer in this process, when huey is
installed.

Throughput: no-op durable jobs per second on ZEO with 1, 2 and 4 runner
processes of 2 threads each, from the first start to the last finish.
"""
import os
import signal
import subprocess
import sys
import time

import transaction
from _common import Counter, ZEOServer, options, percentile, report
from _common import temporary_folder
from ZODB import DB
from ZODB.FileStorage import FileStorage

import _queuejobs
from cipher.background import SYSTEM, QueueRunner, enqueue_call, get_status
from cipher.background.queuestore import get_queue

HERE = os.path.dirname(os.path.abspath(__file__))


def request_rate(db, count, with_job):
    """Request-like transactions per second."""
    conn = db.open()
    root = conn.root()
    began = time.perf_counter()
    for _ in range(count):
        root['counter0'].value += 1
        if with_job:
            enqueue_call(_queuejobs.noop, connection=conn, user=SYSTEM)
        transaction.commit()
    rate = count / (time.perf_counter() - began)
    conn.close()
    return rate


def commit_to_start(db, count, wait):
    """Milliseconds from the end of the commit to the job's first line;
    ``wait(job_id)`` waits for the job."""
    conn = db.open()
    latencies = []
    for _ in range(count):
        job_id = enqueue_call(_queuejobs.started_at, connection=conn,
                              user=SYSTEM)
        transaction.commit()
        committed = time.time()
        status = wait(job_id)
        latencies.append((status.result - committed) * 1e3)
    conn.close()
    return latencies


def huey_latencies(folder, count):
    """The same for Huey: SqliteHuey, one thread worker in this process."""
    try:
        from huey import SqliteHuey
    except ImportError:
        return None
    huey = SqliteHuey(filename=os.path.join(folder, 'huey.db'))
    task = huey.task()(_queuejobs.started_at)
    consumer = huey.create_consumer(workers=1, worker_type='thread',
                                    periodic=False, initial_delay=0.001,
                                    backoff=1.0, max_delay=0.001)
    consumer.start()  # its worker threads, without its signal handlers
    latencies = []
    try:
        for _ in range(count):
            enqueued = time.time()
            result = task()
            latencies.append((result.get(blocking=True, timeout=60)
                              - enqueued) * 1e3)
    finally:
        consumer.stop(graceful=True)
    return latencies


def runner_processes(port, number, poll):
    return [subprocess.Popen(
        [sys.executable, '-m', 'cipher.background', 'jobs', '--zodb',
         'zeo://127.0.0.1:%d' % port, '--threads', '2', '--poll',
         str(poll), '--max-poll', str(poll)],
        cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(number)]


def stop(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(120)


def durable_wait(job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status = get_status(job_id)
        if status.done:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError('job %s is still %s' % (job_id, status.state))
        time.sleep(0.001)  # another process runs it: look again soon


def throughput(db, port, processes, count):
    conn = db.open()
    for _ in range(count):
        enqueue_call(_queuejobs.noop, connection=conn, user=SYSTEM)
    transaction.commit()
    conn.close()
    runners = runner_processes(port, processes, 0.05)
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
            time.sleep(0.05)  # the runner processes work
    finally:
        stop(runners)
    with db.transaction() as conn:  # forget them for the next round
        queue = get_queue(conn.root())
        queue.prune(time.time() + 1, 0, 0)
    return count / (max(f for _, f in times) - min(s for s, _ in times))


def main():
    quick = options(__doc__).quick
    reps = 3 if quick else 7
    requests, samples, jobs = (200, 30, 200) if quick else (1000, 100, 1000)
    with temporary_folder() as folder:
        db = DB(FileStorage(os.path.join(folder, 'Data.fs')))
        with db.transaction() as conn:
            conn.root()['counter0'] = Counter()
        with_job, without = [], []
        for _ in range(reps):
            without.append(request_rate(db, requests, False))
            with_job.append(request_rate(db, requests, True))
        report('7. request commit with an enqueue, FileStorage', 'req/s',
               with_job, without, target=0.9,
               backlog=reps * requests)
        QueueRunner(db).run_pending()  # the jobs those requests enqueued
        runner = QueueRunner(db, threads=1).start()
        local = []
        for _ in range(reps):
            latencies = commit_to_start(
                db, samples, lambda job_id: _wait_local(job_id))
            local.append(percentile(latencies, 0.5))
        runner.stop(60)
        report('7. commit -> durable job start p50, in-process', 'ms',
               local, target_ms=1.0)
        huey = [huey_latencies(folder, samples) for _ in range(reps)]
        if huey[0] is not None:
            report('   Huey (SqliteHuey) enqueue -> start p50', 'ms',
                   [percentile(values, 0.5) for values in huey])
        db.close()

        server = ZEOServer(os.path.join(folder, 'zeo.fs'))
        try:
            zeo = server.db()
            remote = []
            runners = runner_processes(server.port, 1, 0.05)
            try:
                for _ in range(reps):
                    latencies = commit_to_start(zeo, samples, durable_wait)
                    remote.append(percentile(latencies, 0.5))
            finally:
                stop(runners)
            report('7. commit -> durable job start p50, other process, '
                   'ZEO, poll 50 ms', 'ms', remote, target_ms=55)
            for processes in (1, 2, 4):
                rates = [throughput(zeo, server.port, processes, jobs)
                         for _ in range(max(1, reps // 2))]
                report('7. no-op durable jobs, ZEO, %d runner process(es)'
                       % processes, 'jobs/s', rates)
            zeo.close()
        finally:
            server.stop()


def _wait_local(job_id):
    from cipher.background import wait
    return wait(job_id, 120)


if __name__ == '__main__':
    main()
