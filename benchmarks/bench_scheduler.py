"""Workload 3: the thread-pool scheduler against ThreadPoolExecutor.

Dispatch latency: from start() (submit() for the executor) to the first
line of the callable, one task at a time.  Burst: 10,000 trivial tasks
started at once, until the last one has run.
"""
import concurrent.futures
import os
import threading
import time

from _common import options, percentile, report

from cipher.background import BackgroundScheduler


def dispatch_latencies(start, count):
    """Microseconds from calling ``start(fn)`` to ``fn`` running."""
    began = threading.Event()
    when = []

    def fn():
        when.append(time.perf_counter())
        began.set()
    latencies = []
    for _ in range(count):
        began.clear()
        del when[:]
        before = time.perf_counter()
        start(fn)
        began.wait(60)
        latencies.append((when[0] - before) * 1e6)
    return latencies


def burst(start, count):
    """Tasks per second for ``count`` trivial tasks started at once."""
    remaining = [count]
    lock = threading.Lock()
    done = threading.Event()

    def fn():
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()
    began = time.perf_counter()
    for _ in range(count):
        start(fn)
    done.wait(600)
    return count / (time.perf_counter() - began)


def main():
    quick = options(__doc__).quick
    reps = 3 if quick else 7
    samples, tasks = (300, 2000) if quick else (1000, 10000)
    workers = os.cpu_count() or 1
    ours = BackgroundScheduler(max_workers=workers)
    theirs = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        p50, p50_base, p99, p99_base, rate, rate_base = ([] for _ in '123456')
        for _ in range(reps):
            latencies = dispatch_latencies(ours.start, samples)
            baseline = dispatch_latencies(theirs.submit, samples)
            p50.append(percentile(latencies, 0.5))
            p50_base.append(percentile(baseline, 0.5))
            p99.append(percentile(latencies, 0.99))
            p99_base.append(percentile(baseline, 0.99))
            rate.append(burst(ours.start, tasks))
            rate_base.append(burst(theirs.submit, tasks))
        # Lower is better for latencies: the ratio is baseline / ours, so
        # "within 2x" is a ratio of at least 0.5.
        report('3. dispatch p50 vs ThreadPoolExecutor', 'us', p50,
               p50_base, higher_is_better=False, target=0.5)
        report('   dispatch p99 vs ThreadPoolExecutor', 'us', p99,
               p99_base, higher_is_better=False)
        report('3. burst of %d trivial tasks' % tasks, 'tasks/s', rate,
               rate_base, target=0.4)
    finally:
        ours.shutdown(wait=True)
        theirs.shutdown(wait=True)


if __name__ == '__main__':
    main()
