"""Workload 4: perform(), on MappingStorage and FileStorage.

Latency: from the end of the caller's commit to the first line of the
job's callable.  The clock starts in an after-commit hook the caller
registers before perform() registers its own, so it includes the
dispatch, the pool thread waking, and the job's connection, site and
interaction being set up.  Reported beside it: what one db.open()
costs, the part of the latency no scheduler can avoid.

Throughput: no-op ZODB jobs (each one a connection, the site, an
interaction and an empty transaction) started at once, against the raw
unit loop.  Beside it, the ceiling a thread pool of the same size sets
before the library does anything: a ThreadPoolExecutor running bare
units (open, empty commit, close) handed to it at once.
"""
import concurrent.futures
import threading
import time

import transaction
from _common import open_db, options, percentile, prepare, raw_units
from _common import report, temporary_folder
from zope.component import hooks

from cipher.background import jobs
from cipher.background.context import load_site

_began = []
_job_running = threading.Event()


def first_line():
    _began.append(time.perf_counter())
    _job_running.set()


def commit_to_job_latencies(db, site_oid, count):
    """Microseconds from the caller's commit to the job running."""
    latencies = []
    conn = db.open()
    site = load_site(conn, site_oid)
    hooks.setSite(site)
    committed = []
    try:
        for _ in range(count):
            _job_running.clear()
            del _began[:]
            txn = transaction.get()
            txn.addAfterCommitHook(
                lambda ok: committed.append(time.perf_counter()))
            jobs.submit(first_line, user='editor')
            transaction.commit()
            _job_running.wait(60)
            latencies.append((_began[0] - committed.pop()) * 1e6)
    finally:
        hooks.setSite(None)
        conn.close()
    return latencies


def open_cost(db, count):
    """Microseconds for one db.open() and close() of a pooled connection."""
    began = time.perf_counter()
    for _ in range(count):
        db.open().close()
    return (time.perf_counter() - began) / count * 1e6


def noop():
    pass


def noop_jobs(db, site_oid, count):
    """No-op ZODB jobs per second, ``count`` of them started at once."""
    conn = db.open()
    site = load_site(conn, site_oid)
    began = time.perf_counter()
    ids = [jobs.submit(noop, site=site, after_commit=False, user='editor')
           for _ in range(count)]
    for job_id in ids:
        jobs.wait(job_id, 600)
    rate = count / (time.perf_counter() - began)
    conn.close()
    return rate


def _bare_unit(db):
    """What any pool runs at the least for a ZODB job: a connection, an
    empty commit, close."""
    conn = db.open()
    transaction.commit()
    conn.close()


def pooled_bare_units(db, count, threads):
    """The ceiling a thread pool sets before the library does anything:
    ``count`` bare units handed to a ThreadPoolExecutor of ``threads``
    threads at once, per second."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        began = time.perf_counter()
        for future in [pool.submit(_bare_unit, db) for _ in range(count)]:
            future.result()
        return count / (time.perf_counter() - began)


def main():
    quick = options(__doc__).quick
    reps = 3 if quick else 7
    samples, count = (200, 1000) if quick else (1000, 5000)
    with temporary_folder() as folder:
        for kind in ('mapping', 'file'):
            db = open_db(kind, folder)
            site_oid = prepare(db)
            p50, p99, opening, rate, raw = [], [], [], [], []
            ceiling = []
            threads = jobs.get_scheduler().max_workers
            for _ in range(reps):
                latencies = commit_to_job_latencies(db, site_oid, samples)
                p50.append(percentile(latencies, 0.5))
                p99.append(percentile(latencies, 0.99))
                opening.append(open_cost(db, samples))
                rate.append(noop_jobs(db, site_oid, count))
                raw.append(raw_units(db, count // 5 if kind == 'file'
                                     else count))
                ceiling.append(pooled_bare_units(db, count, threads))
            report('4. commit -> job running p50, %s' % kind, 'us', p50,
                   db_open_us=round(sorted(opening)[len(opening) // 2], 1))
            report('   commit -> job running p99, %s' % kind, 'us', p99)
            report('4. no-op ZODB jobs, %s' % kind, 'jobs/s', rate, raw,
                   target=0.8)
            report('   ceiling: ThreadPoolExecutor(%d), bare units, %s'
                   % (threads, kind), 'units/s', ceiling, raw)
            db.close()
    jobs.get_scheduler().shutdown(wait=True)


if __name__ == '__main__':
    main()
