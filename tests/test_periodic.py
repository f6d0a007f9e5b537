"""PeriodicBackgroundWorkerThread: doWork every interval, stop at once."""
import fractions
import threading

import pytest
from zope.component import hooks

from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BackgroundError
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
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', 'editor',
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
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', 'editor')
    assert worker.scheduleNextWork() is True
    worker.stop()
    assert worker.scheduleNextWork() is False


def test_runs_repeatedly_in_a_thread_until_stopped(mapping_db):
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', 'editor',
                     interval=0.001, ticks_wanted=3)
    worker.start()
    assert worker.enough.wait(TIMEOUT)
    assert worker.stop(TIMEOUT)
    assert read(mapping_db, lambda r: r['ticks']) == worker.ticks >= 3


def test_an_hour_interval_does_not_delay_stop(mapping_db):
    worker = Ticking(mapping_db, add_site(mapping_db), 'site', 'editor',
                     interval=3600, ticks_wanted=1)
    worker.start()
    assert worker.enough.wait(TIMEOUT)
    assert worker.stop(TIMEOUT) is True
    assert worker.ticks == 1


def test_interval_argument_overrides_the_class_attribute(mapping_db):
    conn = mapping_db.open()
    add_site(mapping_db)
    conn.sync()
    worker = Ticking.forSite(conn.root()['site'], 'editor', interval=5)
    conn.close()
    assert worker.interval == 5
    assert worker.name == 'periodic background worker thread (Ticking) ' \
        'for site'


class NoInterval(PeriodicBackgroundWorkerThread):
    pass


BAD_INTERVALS = [
    (None, ConfigurationError,
     ['interval must be a positive number of seconds', 'none was given',
      'set it as a class attribute or pass interval=']),
    ('often', ArgumentTypeError,
     ["not 'often' (of type str)", 'pass interval= an int or a float']),
    ('5', ArgumentTypeError, ["'5' (of type str)"]),
    (b'5', ArgumentTypeError, ['(of type bytes)']),
    ([5], ArgumentTypeError, ['(of type list)']),
    (True, ArgumentTypeError, ['not True (of type bool)']),
    (False, ArgumentTypeError, ['not False (of type bool)']),
    (0, ConfigurationError, ['positive number of seconds', 'not 0']),
    (-1, ConfigurationError, ['not -1']),
    (-0.5, ConfigurationError, ['not -0.5']),
    (float('nan'), ConfigurationError, ['finite', 'not nan']),
    (float('inf'), ConfigurationError, ['finite', 'not inf']),
    (float('-inf'), ConfigurationError, ['not -inf']),
    (1e12, ConfigurationError,
     ['at most %d' % threading.TIMEOUT_MAX, 'not 1000000000000.0']),
]


@pytest.mark.parametrize('interval, error_class, words', BAD_INTERVALS,
                         ids=[repr(case[0]) for case in BAD_INTERVALS])
def test_bad_intervals_are_refused(mapping_db, interval, error_class,
                                   words):
    with pytest.raises(BackgroundError) as info:
        NoInterval(mapping_db, b'\0' * 8, 'site', 'editor', interval=interval)
    assert type(info.value) is error_class
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize('interval, error_class', [
    (float('inf'), ConfigurationError),
    (float('nan'), ConfigurationError),
    (True, ArgumentTypeError),
    ('300', ArgumentTypeError),
])
def test_a_bad_class_attribute_interval_is_refused(mapping_db, interval,
                                                   error_class):
    Bad = type('Bad', (PeriodicBackgroundWorkerThread,),
               {'interval': interval})
    with pytest.raises(error_class, match='interval must be a positive'):
        Bad(mapping_db, b'\0' * 8, 'site', 'editor')


@pytest.mark.parametrize('interval', [
    0.001, 1, fractions.Fraction(1, 2), threading.TIMEOUT_MAX])
def test_good_intervals_are_kept(mapping_db, interval):
    worker = NoInterval(mapping_db, b'\0' * 8, 'site', 'editor',
                        interval=interval)
    assert worker.interval == interval
