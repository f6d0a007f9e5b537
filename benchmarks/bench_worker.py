"""Workload 1: the worker loop, one thread, against the raw unit loop,
with a breakdown of where a unit's extra time goes.
Workload 6: stop() latency of an idle periodic worker (interval 1 hour).
"""
import threading
import time

import transaction
from _common import Incrementer, options, open_db, prepare, raw_units
from _common import report
from _common import temporary_folder
from zope.component import hooks
from zope.security.management import endInteraction
from zope.security.management import newInteraction

from cipher.background import PeriodicBackgroundWorkerThread
from cipher.background.context import ConnectionSlot
from cipher.background.context import load_site


def in_a_thread(fn, *args, **kwargs):
    """Run ``fn(*args)`` in a thread of its own, as a worker runs."""
    result = []
    thread = threading.Thread(
        target=lambda: result.append(fn(*args, **kwargs)))
    thread.start()
    thread.join()
    return result[0]


def worker_units(db, site_oid, units):
    worker = Incrementer(db, site_oid, 'site', 'editor', units=units)
    started = time.perf_counter()
    worker.start()
    worker.join()
    return units / (time.perf_counter() - started)


def _note_of(db, site_oid):
    """The user and note a worker's transaction records."""
    worker = Incrementer(db, site_oid, 'site', 'editor')
    return '/ editor', worker.getTransactionNote()


# -- where the time goes --

def _hand_made(db, site_oid, note=None, site=False, interaction=False):
    """The raw unit, with the worker's ingredients that are asked for:
    the transaction's user and note, the local site, an interaction."""
    def unit():
        conn = db.open()
        if note is not None:
            txn = transaction.get()
            txn.user, txn.description = note
        if site:
            hooks.setSite(load_site(conn, site_oid))
        if interaction:
            newInteraction()
        conn.root()['counter0'].value += 1
        transaction.commit()
        if interaction:
            endInteraction()
        if site:
            hooks.setSite(None)
        conn.close()
    return unit


def _steps(db, site_oid):
    """Unit loops that add the worker's ingredients one at a time."""
    user, note = _note_of(db, site_oid)
    noted = (user, note)
    worker = Incrementer(db, site_oid, 'site', 'editor', units=10 ** 9)
    uow = worker.unit_of_work
    kept = db.open()  # the baseline's own kept connection
    slot = ConnectionSlot()

    def kept_and_begun():
        txn = transaction.begin()
        txn.user, txn.description = noted
        hooks.setSite(load_site(kept, site_oid))
        newInteraction()
        kept.root()['counter0'].value += 1
        transaction.commit()
        endInteraction()
        hooks.setSite(None)

    def unit_of_work():
        uow.run(worker.doWork, note=note, slot=slot, runner_thread=True)

    return [('raw unit', _hand_made(db, site_oid)),
            ('+ user and note', _hand_made(db, site_oid, noted)),
            ('+ site', _hand_made(db, site_oid, noted, site=True)),
            ('+ interaction, no principal',
             _hand_made(db, site_oid, noted, site=True, interaction=True)),
            ('the same on a kept connection, begin() per unit',
             kept_and_begun),
            ('UnitOfWork.run, kept: + principal, commit watch, retry',
             unit_of_work),
            ('worker unit (_runUnit, kept connection)',
             lambda: worker._runUnit(slot))]


def breakdown(db, site_oid, units, reps):
    """Microseconds per unit of each step, in the main thread."""
    hooks.setHooks()
    steps = _steps(db, site_oid)
    times = {name: [] for name, _ in steps}
    for _ in range(reps):
        for name, step in steps:
            started = time.perf_counter()
            for _ in range(units):
                step()
            times[name].append(
                (time.perf_counter() - started) / units * 1e6)
    return times


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
    worker = Idle(db, site_oid, 'site', 'editor')
    worker.start()
    worker.idle.wait(60)
    started = time.perf_counter()
    worker.stop(60)
    return (time.perf_counter() - started) * 1000


def main():
    quick = options(__doc__).quick
    reps = 3 if quick else 7
    with temporary_folder() as folder:
        for kind, units, target in [('mapping', 5000, 1.0),
                                    ('file', 1000, 1.0)]:
            if quick:
                units //= 5
            db = open_db(kind, folder)
            site_oid = prepare(db)
            user, note = _note_of(db, site_oid)
            raw, raw_noted, worker = [], [], []
            for _ in range(reps):  # interleaved: all see the same machine
                # The baselines run in a thread of their own, like the
                # worker: the thread's cost is not the unit of work's.
                raw.append(in_a_thread(raw_units, db, units))
                raw_noted.append(in_a_thread(raw_units, db, units,
                                             user=user, note=note))
                worker.append(worker_units(db, site_oid, units))
            report('1. worker loop, 1 thread, %s' % kind, 'units/s',
                   worker, raw, target=target)
            report('   like for like: raw loop writing user+note',
                   'units/s', worker, raw_noted)
            for name, values in breakdown(db, site_oid, units,
                                          reps).items():
                report('   %s, %s' % (name, kind), 'us/unit', values)
            db.close()
        db = open_db('mapping', folder)
        site_oid = prepare(db)
        latencies = [stop_latency(db, site_oid) for _ in range(reps * 3)]
        report('6. stop() of an idle periodic worker', 'ms', latencies)
        db.close()


if __name__ == '__main__':
    main()
