"""PeriodicBackgroundWorkerThread: doWork every interval, stop at once."""
import threading

import pytest
from zope.component import hooks

from cipher.background.errors import ConfigurationError
from cipher.background.periodic import PeriodicBackgroundWorkerThread
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Ticking(PeriodicBackgroundWorkerThread):
    interval = 300

    def __init__(self, *args, ticks_wanted=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ticks = 0
        self.ticks_wanted = ticks_wanted
        self.enough = threading.Event()

    def doWork(self):
        root = hooks.getSite()._p_jar.root()
        root['ticks'] = root.get('ticks', 0) + 1
        self.ticks += 1
        if self.ticks == self.ticks_wanted:
            self.enough.set()


def test_schedule_measures_from_unit_start_without_drift(mapping_db):
    clock = Clock()
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', None,
                     clock=clock)
    waits = []

    def wait(seconds):
        waits.append(seconds)
        clock.now += seconds
        return True
    worker.wait = wait

    assert worker.scheduleNextWork() is True  # the first unit at once
    assert waits == []
    clock.now += 40  # the unit took 40 s
    assert worker.scheduleNextWork() is True
    assert waits == [260]
    clock.now += 500  # a unit longer than the interval
    assert worker.scheduleNextWork() is True
    assert waits == [260]  # the next one follows at once


def test_scheduleNextWork_says_stop_when_the_wait_was_interrupted(
        mapping_db):
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', None)
    assert worker.scheduleNextWork() is True
    worker.stop()
    assert worker.scheduleNextWork() is False


def test_runs_repeatedly_in_a_thread_until_stopped(mapping_db):
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', None,
                     interval=0.001, ticks_wanted=3)
    worker.start()
    assert worker.enough.wait(TIMEOUT)
    assert worker.stop(TIMEOUT)
    assert read(mapping_db, lambda r: r['ticks']) == worker.ticks >= 3


def test_an_hour_interval_does_not_delay_stop(mapping_db):
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', None,
                     interval=3600, ticks_wanted=1)
    worker.start()
    assert worker.enough.wait(TIMEOUT)
    assert worker.stop(TIMEOUT) is True
    assert worker.ticks == 1


def test_interval_argument_overrides_the_class_attribute(mapping_db):
    conn = mapping_db.open()
    add_site(mapping_db)
    conn.sync()
    worker = Ticking.forSite(conn.root()['site'], interval=5)
    conn.close()
    assert worker.interval == 5
    assert worker.name == 'periodic background worker thread (Ticking) ' \
        'for site'


@pytest.mark.parametrize('interval', [0, -1, None, 'often', True])
def test_interval_must_be_a_positive_number(mapping_db, interval):
    class NoInterval(PeriodicBackgroundWorkerThread):
        pass
    with pytest.raises(ConfigurationError,
                       match='interval must be a positive number'):
        NoInterval(mapping_db, b'\0' * 8, 'site', None, interval=interval)
