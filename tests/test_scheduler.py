"""The thread-pool schedulers and the task decorator."""
import concurrent.futures
import gc
import signal
import threading
import weakref

import pytest
import transaction
from zope.security.management import endInteraction
from zope.security.management import newInteraction
from zope.security.management import queryInteraction
from zope.interface.verify import verifyObject

from cipher.background.errors import ArgumentTypeError
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
    release = threading.Event()

    def add(a, b=0):
        release.wait(TIMEOUT)
        return a + b, threading.current_thread().name

    task_id = scheduler.start(add, args=(1,), kwargs={'b': 2})
    assert scheduler.latest_id == task_id
    assert scheduler.task[task_id] == Task(add, (1,), {'b': 2})
    release.set()
    total, thread_name = scheduler.future[task_id].result(TIMEOUT)
    assert total == 3
    assert thread_name.startswith('cipher.background')
    assert thread_name != threading.current_thread().name
    assert scheduler.task[task_id] == Task(add, (), {})  # arguments let go


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
    with pytest.raises(ArgumentTypeError,
                       match=r'write @task\(scheduler\)'):
        task(lambda: None)


@pytest.mark.parametrize('bad', [0, -2, 1.5, 'four', True])
def test_max_workers_must_be_a_positive_whole_number(bad):
    with pytest.raises(ConfigurationError, match='max_workers'):
        BackgroundScheduler(max_workers=bad)


@pytest.mark.parametrize('fn, args, kwargs, message', [
    (42, (), None, 'expected a callable'),
    (print, 'abc', None, 'args must be a tuple'),
    (print, (), [1], 'kwargs must be a dict'),
    (print, (), {1: 'one'}, 'kwargs keys must be argument names'),
])
def test_bad_starts_are_argument_type_errors(scheduler, fn, args, kwargs,
                                             message):
    for each in (scheduler, ImmediateScheduler()):
        with pytest.raises(ArgumentTypeError, match=message):
            each.start(fn, args, kwargs)
        assert each.task == {} and each.stopped
    assert issubclass(ArgumentTypeError, TypeError)  # old handlers work




def test_keep_finished_must_be_a_whole_number():
    for cls in (BackgroundScheduler, ImmediateScheduler):
        with pytest.raises(ConfigurationError, match='keep_finished'):
            cls(keep_finished=-1)
        with pytest.raises(ArgumentTypeError, match='keep_finished'):
            cls(keep_finished='5')


# -- stopped --

def test_background_scheduler_is_stopped_until_started_and_after_shutdown():
    scheduler = BackgroundScheduler(max_workers=1)
    assert scheduler.stopped
    task_id = scheduler.start(int)
    scheduler.future[task_id].result(TIMEOUT)
    assert not scheduler.stopped
    scheduler.shutdown()
    assert scheduler.stopped


def test_a_scheduler_shut_down_before_its_first_start_stays_stopped():
    for scheduler in (BackgroundScheduler(max_workers=1),
                      ImmediateScheduler()):
        scheduler.shutdown()
        assert scheduler.stopped
        with pytest.raises(SchedulerShutDown, match='shut down'):
            scheduler.start(int)
        assert scheduler.stopped and scheduler.task == {}


def test_blocking_scheduler_is_stopped_until_started_and_after_shutdown():
    scheduler = BlockingScheduler(max_workers=1)
    seen = []

    def first():
        seen.append(scheduler.stopped)
        scheduler.shutdown()

    assert scheduler.stopped
    scheduler.start(first)
    assert seen == [False]
    assert scheduler.stopped


def test_immediate_scheduler_is_stopped_until_started_and_after_shutdown():
    scheduler = ImmediateScheduler()
    assert scheduler.stopped
    scheduler.start(int)
    assert not scheduler.stopped
    scheduler.shutdown()
    assert scheduler.stopped
    with pytest.raises(SchedulerShutDown, match='Create a new scheduler'):
        scheduler.start(int)


# -- finished tasks let go of their arguments --

class Big:
    """An argument to watch with a weak reference."""


def succeed(arg):
    return 'done'


def fail(arg):
    raise ValueError('no luck with %s' % type(arg).__name__)


@pytest.mark.parametrize('fn', [succeed, fail])
@pytest.mark.parametrize('make', [
    lambda: BackgroundScheduler(max_workers=1), ImmediateScheduler])
def test_finished_tasks_hold_no_arguments(make, fn):
    scheduler = make()
    try:
        arg = Big()
        ref = weakref.ref(arg)
        task_id = scheduler.start(fn, (arg,), {})
        del arg
        future = scheduler.future[task_id]
        concurrent_wait(future)
        gc.collect()
        assert ref() is None
        assert scheduler.task[task_id] == Task(fn, (), {})
        if fn is fail:   # the traceback still tells what happened
            error = future.exception(0)
            assert 'no luck with Big' in str(error)
            assert error.__traceback__ is not None
        else:
            assert future.result(0) == 'done'
    finally:
        scheduler.shutdown()


def concurrent_wait(future):
    done, _ = concurrent.futures.wait([future], TIMEOUT)
    assert done == {future}


def test_cancelled_tasks_hold_no_arguments():
    scheduler = BackgroundScheduler(max_workers=1)
    release = threading.Event()
    scheduler.start(release.wait, (TIMEOUT,))
    arg = Big()
    ref = weakref.ref(arg)
    task_id = scheduler.start(succeed, (arg,))
    del arg
    assert scheduler.future[task_id].cancel()
    release.set()
    scheduler.shutdown(wait=True)
    gc.collect()
    assert ref() is None
    assert scheduler.task[task_id] == Task(succeed, (), {})


# -- shutdown(cancel_futures=...) --

@pytest.mark.parametrize('cls', [BackgroundScheduler, BlockingScheduler])
@pytest.mark.parametrize('cancel', [True, False])
def test_cancel_futures_cancels_the_queued_tasks(cls, cancel):
    scheduler = cls(max_workers=1)
    start = getattr(scheduler, 'start_nowait', scheduler.start)
    running = threading.Event()
    release = threading.Event()
    ran = []

    def block():
        running.set()
        release.wait(TIMEOUT)
        return 'unblocked'

    first = start(block)
    assert running.wait(TIMEOUT)
    queued = [start(ran.append, (n,)) for n in range(3)]
    scheduler.shutdown(wait=False, cancel_futures=cancel)
    release.set()
    scheduler.shutdown(wait=True)
    assert scheduler.future[first].result(0) == 'unblocked'
    assert [scheduler.future[t].cancelled() for t in queued] == [cancel] * 3
    assert ran == ([] if cancel else [0, 1, 2])
    assert scheduler.stopped


# -- ImmediateScheduler --

def test_immediate_scheduler_runs_in_a_fresh_thread_and_returns_after():
    scheduler = ImmediateScheduler()
    seen = {}

    def where():
        seen['thread'] = threading.current_thread()
        return threading.get_ident()

    task_id = scheduler.start(where)
    assert scheduler.latest_id == task_id
    assert scheduler.future[task_id].done()
    assert scheduler.future[task_id].result(0) != threading.get_ident()
    thread = seen['thread']
    assert thread.name == 'cipher.background.immediate'
    assert thread.daemon
    assert not thread.is_alive()   # joined before start() returned


def test_immediate_scheduler_runs_without_the_callers_footing():
    scheduler = ImmediateScheduler()
    txn = transaction.begin()
    newInteraction()
    try:
        task_id = scheduler.start(
            lambda: (transaction.get(), queryInteraction()))
        their_txn, their_interaction = scheduler.future[task_id].result(0)
        assert their_txn is not txn
        assert their_interaction is None
        assert transaction.get() is txn
        assert queryInteraction() is not None
    finally:
        endInteraction()
        transaction.abort()


def test_immediate_scheduler_keeps_exceptions_in_the_future():
    scheduler = ImmediateScheduler()
    failing = scheduler.start(lambda: 1 / 0)
    assert isinstance(scheduler.future[failing].exception(0),
                      ZeroDivisionError)
    task_id = scheduler.start(int)
    assert scheduler.future[task_id].result(0) == 0


@pytest.mark.parametrize('exc_class', [KeyboardInterrupt, SystemExit])
def test_immediate_scheduler_raises_interrupts_again(exc_class):
    scheduler = ImmediateScheduler()

    def interrupted():
        raise exc_class('stop')

    with pytest.raises(exc_class, match='stop') as info:
        scheduler.start(interrupted)
    future = scheduler.future[scheduler.latest_id]
    assert future.exception(0) is info.value
    assert scheduler.task[scheduler.latest_id] == Task(interrupted, (), {})
    task_id = scheduler.start(int)    # still usable
    assert scheduler.future[task_id].done()


@pytest.mark.skipif(not hasattr(signal, 'pthread_kill'),
                    reason='needs pthread_kill')
def test_ctrl_c_while_waiting_for_an_immediate_task_reaches_the_caller():
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT)
            is not signal.default_int_handler):
        pytest.skip('needs the default SIGINT handler in the main thread')
    scheduler = ImmediateScheduler()
    release = threading.Event()
    seen = {}

    def long_running():
        seen['thread'] = threading.current_thread()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        release.wait(TIMEOUT)
        return 'finished anyway'

    with pytest.raises(KeyboardInterrupt):
        scheduler.start(long_running)
    release.set()
    seen['thread'].join(TIMEOUT)
    assert not seen['thread'].is_alive()
    assert scheduler.future[scheduler.latest_id].result(0) == \
        'finished anyway'
    scheduler.shutdown()


def test_immediate_scheduler_shutdown_joins_callables_still_running():
    scheduler = ImmediateScheduler()
    started = threading.Event()
    release = threading.Event()

    def slow():
        started.set()
        release.wait(TIMEOUT)
        return 'done'

    caller = threading.Thread(target=scheduler.start, args=(slow,))
    caller.start()
    assert started.wait(TIMEOUT)
    releaser = threading.Timer(0, release.set)  # while shutdown() waits
    releaser.start()
    scheduler.shutdown(wait=True)
    assert scheduler.future[scheduler.latest_id].done()
    for thread in (caller, releaser):
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_immediate_finished_entries_are_bounded():
    scheduler = ImmediateScheduler(keep_finished=3)
    ids = [scheduler.start(int) for _ in range(10)]
    assert set(scheduler.task) == set(scheduler.future) == set(ids[-3:])
