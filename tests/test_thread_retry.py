"""Worker units are retried on conflicts: real ones, on real storages."""
import threading

import transaction
from persistent import Persistent
from ZEO.Exceptions import ClientDisconnected
from ZODB import DB
from ZODB.DemoStorage import DemoStorage
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError
from zope.component import hooks

from cipher.background.retry import RetryPolicy
from cipher.background.thread import BackgroundWorkerThread
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class Counter(Persistent):
    """A shared counter with no conflict resolution: every concurrent
    write is a real ConflictError."""

    def __init__(self):
        self.value = 0


class Incrementer(BackgroundWorkerThread):
    """Adds 1 to root['counter'] in each of ``units`` units."""

    def __init__(self, *args, units=1, barrier=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.remaining = units
        self.barrier = barrier

    def scheduleNextWork(self):
        if self.barrier is not None:
            self.barrier.wait(TIMEOUT)
            self.barrier = None
        return self.remaining > 0

    def doWork(self):
        hooks.getSite()._p_jar.root()['counter'].value += 1

    def doCleanup(self):
        self.remaining -= 1


def add_counter(db):
    return add_site(db, counter=Counter())


def recording_policy(**settings):
    delays = []

    def sleep(seconds, stop_event=None):
        delays.append(seconds)
        return False
    return RetryPolicy(sleep=sleep, random=lambda: 1.0, **settings), delays


def run_concurrently(db, threads, units):
    site_oid = add_counter(db)
    barrier = threading.Barrier(threads)
    workers = [Incrementer(db, site_oid, 'site', 'editor', units=units,
                           barrier=barrier) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT)
        assert not worker.is_alive()
    return workers


def check_exact_total(db, workers, threads, units):
    assert read(db, lambda r: r['counter'].value) == threads * units
    assert sum(w.status.units_done for w in workers) == threads * units
    assert sum(w.status.units_failed for w in workers) == 0


def test_threads_sharing_a_counter_lose_nothing_on_filestorage(file_db):
    workers = run_concurrently(file_db, threads=4, units=50)
    check_exact_total(file_db, workers, 4, 50)


def test_threads_sharing_a_counter_lose_nothing_on_demostorage(tmp_path):
    db = DB(DemoStorage(base=FileStorage(str(tmp_path / 'base.fs'))))
    try:
        workers = run_concurrently(db, threads=3, units=40)
        check_exact_total(db, workers, 3, 40)
    finally:
        db.close()


def test_threads_sharing_a_counter_lose_nothing_on_zeo(zeo_db):
    workers = run_concurrently(zeo_db, threads=3, units=20)
    check_exact_total(zeo_db, workers, 3, 20)


def test_conflict_in_doWork_is_retried_in_a_fresh_transaction(mapping_db):
    policy, delays = recording_policy(base_delay=0.01)
    seen = []

    class Flaky(Incrementer):
        def doWork(self):
            seen.append(transaction.get())
            super().doWork()
            if len(seen) < 3:
                raise ConflictError('somebody else won')

    worker = Flaky(mapping_db, add_counter(mapping_db), 'site', 'editor',
                   retry_policy=policy)
    worker.runOnce()
    assert len(set(map(id, seen))) == 3  # three distinct transactions
    assert delays == [0.01, 0.02]
    assert read(mapping_db, lambda r: r['counter'].value) == 1
    assert worker.status.conflicts_retried == 2
    assert worker.status.units_done == 1


def test_exhausted_attempts_log_one_error_and_the_loop_goes_on(
        mapping_db, logged):
    policy, delays = recording_policy(attempts=3)

    class Hopeless(Incrementer):
        def doWork(self):
            if self.remaining == 2:
                raise ConflictError('always loses')
            super().doWork()

    worker = Hopeless(mapping_db, add_counter(mapping_db), 'site', 'editor',
                      units=2, retry_policy=policy)
    worker.start()
    worker.join(TIMEOUT)
    assert read(mapping_db, lambda r: r['counter'].value) == 1
    lines = logged.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0] == (
        '%s: gave up after 3 attempts (attempts used up); last conflict: '
        'ConflictError: always loses. Make the unit shorter or touch fewer '
        'shared objects, or give the worker a RetryPolicy with more '
        'attempts.' % worker.name)
    assert len(delays) == 2
    assert (worker.status.units_failed, worker.status.units_done) == (1, 1)


def test_disconnects_wait_longer_without_using_up_attempts(mapping_db):
    policy, delays = recording_policy(
        attempts=2, disconnect_base_delay=0.5, disconnect_max_delay=2)

    class Unreachable(Incrementer):
        calls = 0

        def doWork(self):
            self.calls += 1
            if self.calls <= 4:
                raise ClientDisconnected('server away')
            super().doWork()

    worker = Unreachable(mapping_db, add_counter(mapping_db), 'site', 'editor',
                         retry_policy=policy)
    worker.runOnce()
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert read(mapping_db, lambda r: r['counter'].value) == 1


def test_stop_interrupts_a_retry_wait(mapping_db, logged):
    waiting = threading.Event()

    def sleep(seconds, stop_event):
        waiting.set()
        return stop_event.wait(seconds)

    class Stuck(Incrementer):
        def doWork(self):
            raise ConflictError('forever')

    policy = RetryPolicy(sleep=sleep, base_delay=3600, max_delay=3600,
                         random=lambda: 1.0)
    worker = Stuck(mapping_db, add_counter(mapping_db), 'site', 'editor',
                   units=5, retry_policy=policy)
    worker.start()
    assert waiting.wait(TIMEOUT)
    assert worker.status.state == 'retrying'
    assert worker.stop(TIMEOUT)
    assert worker.status.state == 'stopped'
    assert worker.remaining == 4  # the interrupted unit was cleaned up
    # Given up, and the log says so: the unit is not in the database.
    assert ('stopped: stopped while waiting to retry after ConflictError'
            in logged.getvalue())
    assert 'the unit was not done' in logged.getvalue()


def test_retry_policy_as_a_class_attribute(mapping_db):
    policy, delays = recording_policy(attempts=1)

    class NeverRetry(Incrementer):
        retry_policy = policy

        def doWork(self):
            raise ConflictError('once is enough')

    worker = NeverRetry(mapping_db, add_counter(mapping_db), 'site', 'editor')
    assert worker.unit_of_work.retry_policy is policy
    worker.runOnce()
    assert delays == [] and worker.status.units_failed == 1
