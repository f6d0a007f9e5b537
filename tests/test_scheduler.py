"""The thread-pool schedulers and the task decorator."""
import threading

import pytest
from zope.interface.verify import verifyObject

from cipher.background.errors import ConfigurationError
from cipher.background.errors import SchedulerShutDown
from cipher.background.interfaces import IScheduler
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scheduler import BlockingScheduler
from cipher.background.scheduler import ImmediateScheduler
from cipher.background.scheduler import Task
from cipher.background.scheduler import task
from helpers import TIMEOUT


@pytest.fixture
def scheduler():
    scheduler = BackgroundScheduler(max_workers=2)
    yield scheduler
    scheduler.shutdown()


def test_schedulers_provide_their_interface(scheduler):
    assert verifyObject(IScheduler, scheduler)
    assert verifyObject(IScheduler, ImmediateScheduler())
    blocking = BlockingScheduler(max_workers=1)
    assert verifyObject(IScheduler, blocking)
    blocking.shutdown()


def test_start_runs_in_the_pool_and_tracks_the_task(scheduler):
    def add(a, b=0):
        return a + b, threading.current_thread().name

    task_id = scheduler.start(add, args=(1,), kwargs={'b': 2})
    assert scheduler.latest_id == task_id
    assert scheduler.task[task_id] == Task(add, (1,), {'b': 2})
    total, thread_name = scheduler.future[task_id].result(TIMEOUT)
    assert total == 3
    assert thread_name.startswith('cipher.background')
    assert thread_name != threading.current_thread().name


def test_task_ids_are_unguessable_and_never_reused(scheduler):
    ids = [scheduler.start(int) for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(task_id) == 32 for task_id in ids)


def test_shutdown_is_harmless_twice_and_before_any_start():
    scheduler = BackgroundScheduler(max_workers=1)
    scheduler.shutdown()
    scheduler.shutdown()
    assert scheduler.stopped


def test_start_after_shutdown_raises_and_changes_nothing(scheduler):
    first = scheduler.start(int)
    scheduler.future[first].result(TIMEOUT)
    scheduler.shutdown()
    before = (scheduler.task, scheduler.future, scheduler.latest_id)
    with pytest.raises(SchedulerShutDown, match='Create a new scheduler'):
        scheduler.start(int)
    assert (scheduler.task, scheduler.future, scheduler.latest_id) == before


@pytest.mark.parametrize('threads', [1, 2])
def test_finished_entries_do_not_grow_without_bound(threads):
    scheduler = BackgroundScheduler(max_workers=threads, keep_finished=5)
    ids = [scheduler.start(int) for _ in range(40)]
    scheduler.shutdown(wait=True)
    assert len(scheduler.task) == len(scheduler.future) == 5
    if threads == 1:  # tasks finish in order: the newest ones are kept
        assert set(scheduler.task) == set(ids[-5:])


def test_shutdown_waits_for_running_tasks():
    scheduler = BackgroundScheduler(max_workers=1)
    release = threading.Event()
    running = threading.Event()
    done = []

    def slow():
        running.set()
        release.wait(TIMEOUT)
        done.append(True)

    scheduler.start(slow)
    assert running.wait(TIMEOUT)
    threading.Timer(0, release.set).start()  # from another thread
    scheduler.shutdown(wait=True)
    assert done == [True]


def test_blocking_scheduler_returns_only_after_shutdown():
    scheduler = BlockingScheduler(max_workers=2)
    ran = []

    def first():
        ran.append('first')
        scheduler.start_nowait(second)

    def second():
        ran.append('second')
        scheduler.shutdown()  # from inside the pool: does not deadlock

    task_id = scheduler.start(first)
    assert scheduler.stopped
    assert ran == ['first', 'second']
    assert scheduler.future[task_id].done()
    with pytest.raises(SchedulerShutDown):
        scheduler.start(first)


def test_task_decorator_adds_start_and_keeps_the_plain_call(scheduler):
    @task(scheduler)
    def double(x):
        return 2 * x

    assert double(4) == 8
    task_id = double.start(5)
    assert scheduler.future[task_id].result(TIMEOUT) == 10


def test_task_decorator_needs_a_scheduler():
    with pytest.raises(TypeError, match=r'write @task\(scheduler\)'):
        task(lambda: None)


@pytest.mark.parametrize('bad', [0, -2, 1.5, 'four', True])
def test_max_workers_must_be_a_positive_whole_number(bad):
    with pytest.raises(ConfigurationError, match='max_workers'):
        BackgroundScheduler(max_workers=bad)


@pytest.mark.parametrize('fn, args, kwargs, message', [
    (42, (), None, 'expected a callable'),
    (print, 'abc', None, 'args must be a tuple'),
    (print, (), [1], 'kwargs must be a dict'),
])
def test_bad_starts_are_type_errors(scheduler, fn, args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        scheduler.start(fn, args, kwargs)
    assert scheduler.task == {}


def test_immediate_scheduler_runs_in_the_calling_thread():
    scheduler = ImmediateScheduler()
    task_id = scheduler.start(threading.get_ident)
    assert scheduler.future[task_id].result(0) == threading.get_ident()
    failing = scheduler.start(lambda: 1 / 0)
    assert isinstance(scheduler.future[failing].exception(0),
                      ZeroDivisionError)
    scheduler.shutdown()
    with pytest.raises(SchedulerShutDown):
        scheduler.start(int)
