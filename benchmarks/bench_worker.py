"""Workload 1: the worker loop, one thread, against the raw unit loop.
Workload 6: stop() latency of an idle periodic worker (interval 1 hour).
"""
import threading
import time

from _common import options, open_db, prepare, raw_units, report
from _common import temporary_folder
from zope.component import hooks

from cipher.background import BackgroundWorkerThread
from cipher.background import PeriodicBackgroundWorkerThread


class Incrementer(BackgroundWorkerThread):
    """Does ``units`` units, each adding 1 to one counter."""

    def __init__(self, *args, units=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.remaining = units

    def scheduleNextWork(self):
        self.remaining -= 1
        return self.remaining >= 0

    def doWork(self):
        hooks.getSite()._p_jar.root()['counter0'].value += 1


def in_a_thread(fn, *args):
    """Run ``fn(*args)`` in a thread of its own, as a worker runs."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn(*args)))
    thread.start()
    thread.join()
    return result[0]


def worker_units(db, site_oid, units):
    worker = Incrementer(db, site_oid, 'site', None, units=units)
    started = time.perf_counter()
    worker.start()
    worker.join()
    return units / (time.perf_counter() - started)


class Idle(PeriodicBackgroundWorkerThread):
    interval = 3600

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle = threading.Event()

    def scheduleNextWork(self):
        if self._next_run is not None:
            self.idle.set()
        return super().scheduleNextWork()


def stop_latency(db, site_oid):
    worker = Idle(db, site_oid, 'site', None)
    worker.start()
    worker.idle.wait(60)
    started = time.perf_counter()
    worker.stop(60)
    return (time.perf_counter() - started) * 1000


def main():
    quick = options(__doc__).quick
    reps = 3 if quick else 7
    with temporary_folder() as folder:
        for kind, units, target in [('mapping', 5000, 0.75),
                                    ('file', 1000, 0.95)]:
            if quick:
                units //= 5
            db = open_db(kind, folder)
            site_oid = prepare(db)
            raw, raw_main, worker = [], [], []
            for _ in range(reps):  # interleaved: all see the same machine
                raw.append(in_a_thread(raw_units, db, units))
                raw_main.append(raw_units(db, units))
                worker.append(worker_units(db, site_oid, units))
            # The baseline runs in a thread of its own, like the worker: a
            # loop in the main thread is a few per cent faster here, and
            # that is the thread's cost, not the unit of work's.
            report('1. worker loop, 1 thread, %s' % kind, 'units/s',
                   worker, raw, target=target)
            report('   (the same, raw loop in the main thread)', 'units/s',
                   worker, raw_main)
            db.close()
        db = open_db('mapping', folder)
        site_oid = prepare(db)
        latencies = [stop_latency(db, site_oid) for _ in range(reps * 3)]
        report('6. stop() of an idle periodic worker', 'ms', latencies)
        db.close()


if __name__ == '__main__':
    main()
