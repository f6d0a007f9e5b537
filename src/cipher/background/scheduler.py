"""Thread-pool schedulers: run callables in the background, by task id.

:class:`BackgroundScheduler` runs each started callable in a pool of
threads and hands back a task id at once.  :class:`BlockingScheduler`
does the same, but its ``start()`` keeps the caller in the foreground
until somebody calls ``shutdown()``.  :class:`ImmediateScheduler` runs
the callable at once and synchronously, in a fresh thread the caller
joins (for tests, and for work run at once from a hook or another job).
The :func:`task` decorator gives a function ``fn.start(*args, **kwargs)``.

Every scheduler tracks its tasks in ``task`` and ``future``: the
unfinished ones, and the last ``keep_finished`` finished ones.  Once a
task ends its arguments are let go: a finished task is kept as
``Task(fn, (), {})`` next to its future (which holds the result or the
exception), so big arguments do not stay in memory.  The callable itself
is kept, to tell what ran; a callable that binds data (a partial, a
closure, a bound method) keeps that data until the task is forgotten.
"""
import collections
import concurrent.futures
import functools
import os
import threading
import traceback

from zope.interface import implementer

from cipher.background._pool import DaemonPool
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import SchedulerShutDown
from cipher.background.interfaces import IScheduler

#: What was started: the callable and its arguments (empty once ended).
Task = collections.namedtuple('Task', 'fn args kwargs')

_pool_thread = threading.local()


_ID_SIZE = 16
_ID_BATCH = 256  # ids drawn from the system's random source at once
_ids_lock = threading.Lock()
_ids = {'bytes': b'', 'offset': 0}


def new_id():
    """A fresh task or job id: 32 hex digits from the system's random
    source, so unguessable and never reused (what uuid4().hex holds).

    The bytes are drawn in batches: ``os.urandom()`` lets other threads
    run while it is in the kernel, and once per id that made a burst of
    submissions trade the interpreter with the pool thread at every job.
    """
    with _ids_lock:
        offset = _ids['offset']
        if offset == len(_ids['bytes']):
            _ids['bytes'], offset = os.urandom(_ID_SIZE * _ID_BATCH), 0
        _ids['offset'] = offset + _ID_SIZE
        return _ids['bytes'][offset:offset + _ID_SIZE].hex()


def _forget_ids():
    """In a forked child: never hand out the parent's ids."""
    _ids['bytes'], _ids['offset'] = b'', 0


os.register_at_fork(after_in_child=_forget_ids)


def _check_callable(fn, args, kwargs):
    """ArgumentTypeError unless ``fn(*args, **kwargs)`` can be called."""
    if not callable(fn):
        raise ArgumentTypeError(
            'expected a callable to run in the background, got %r; pass '
            'the function itself, not its result' % (fn,))
    if not isinstance(args, (tuple, list)):
        raise ArgumentTypeError(
            'args must be a tuple or list, not %r' % (args,))
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise ArgumentTypeError(
                'kwargs must be a dict, not %r' % (kwargs,))
        names = [name for name in kwargs if not isinstance(name, str)]
        if names:
            raise ArgumentTypeError(
                'kwargs keys must be argument names (strings), not %r'
                % (names[0],))


def _check_whole(name, value, least):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError('%s must be a whole number >= %d, not %r'
                                % (name, least, value))
    if value < least:
        raise ConfigurationError('%s must be a whole number >= %d, not %r'
                                 % (name, least, value))


def _call(task):
    """Call the task.  An exception leaving it has the local variables of
    the frames it passed through cleared (its traceback still formats):
    kept in the task's future, it would keep the arguments alive too."""
    fn, args, kwargs = task
    del task
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:
        del args, kwargs
        traceback.clear_frames(exc.__traceback__)  # skips this, running
        raise


class _Tasks:
    """What the schedulers share: the task and future mappings, bounded,
    and the started/shut-down state."""

    # The task and future mappings are changed by single dict and deque
    # operations, which are atomic, and read as copies: the submitting
    # thread and the pool threads take no common lock per task (one taken
    # by both at every task is where threads queue up behind each other).
    # Forgetting old finished tasks is done by one thread at a time.

    def __init__(self, keep_finished):
        _check_whole('keep_finished', keep_finished, 0)
        self.keep_finished = keep_finished
        self._lock = threading.Lock()
        self._forgetting = threading.Lock()
        self._tasks = {}
        self._futures = {}
        self._finished = collections.deque()   # ids, oldest first
        self._started = False
        self._closed = False
        self._latest_id = None

    def __repr__(self):
        return '<%s%s>' % (type(self).__name__,
                           ' stopped' if self._closed else '')

    @property
    def stopped(self):
        """True before the first start() and once shutdown() was called;
        False in between."""
        return self._closed or not self._started

    @property
    def latest_id(self):
        """The id of the task started last, or None."""
        return self._latest_id

    @property
    def task(self):
        """A copy of the mapping task id -> Task(fn, args, kwargs):
        unfinished tasks with their arguments, finished ones (the last
        ``keep_finished``) as Task(fn, (), {})."""
        return self._tasks.copy()

    @property
    def future(self):
        """A copy of the mapping task id -> concurrent.futures.Future,
        for the same tasks as ``task``."""
        return self._futures.copy()

    def _check_open(self):
        """SchedulerShutDown after shutdown()."""
        if self._closed:
            raise SchedulerShutDown(
                '%r was shut down; nothing was started. Create a new '
                'scheduler to run more work' % self)

    def _register(self, task_id, task, future):
        """Track a new task."""
        self._futures[task_id] = future
        self._tasks[task_id] = task
        self._latest_id = task_id
        self._started = True

    def _unregister(self, task_id):
        self._tasks.pop(task_id, None)
        self._futures.pop(task_id, None)

    def _claim(self, task_id):
        return self._tasks[task_id]

    def _finish(self, task_id):
        """Count the task as finished: let go of its arguments, forget the
        oldest finished tasks beyond ``keep_finished``."""
        task = self._tasks.get(task_id)
        if task is not None:
            self._tasks[task_id] = Task(task.fn, (), {})
        finished = self._finished
        finished.append(task_id)
        if (len(finished) > self.keep_finished
                and self._forgetting.acquire(False)):
            try:
                while len(finished) > self.keep_finished:
                    self._unregister(finished.popleft())
            finally:
                self._forgetting.release()

    def _finish_if_cancelled(self, task_id, future):
        if future.cancelled():  # it never ran, so _run did not finish it
            self._finish(task_id)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.shutdown(wait=True)


@implementer(IScheduler)
class BackgroundScheduler(_Tasks):
    """Runs callables in a pool of ``max_workers`` daemon threads (a whole
    number >= 1, by default one per CPU), started as work arrives.

    The ``task`` and ``future`` mappings hold every unfinished task and
    the last ``keep_finished`` (a whole number >= 0) finished ones.
    """

    def __init__(self, max_workers=None, keep_finished=1000,
                 thread_name_prefix='cipher.background'):
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        _check_whole('max_workers', max_workers, 1)
        super().__init__(keep_finished)
        self.max_workers = max_workers
        self._pool = DaemonPool(max_workers, thread_name_prefix)

    def __repr__(self):
        return '<%s max_workers=%d%s>' % (
            type(self).__name__, self.max_workers,
            ' stopped' if self._closed else '')

    def start(self, fn, args=(), kwargs=None):
        """Queue ``fn(*args, **kwargs)`` for the pool; return its task id.

        ArgumentTypeError (a TypeError) for a non-callable or bad
        arguments; SchedulerShutDown after shutdown() (or at interpreter
        exit), and nothing is started.
        """
        _check_callable(fn, args, kwargs)
        task = Task(fn, tuple(args), dict(kwargs or {}))
        task_id = new_id()
        future = concurrent.futures.Future()
        self._check_open()
        self._register(task_id, task, future)
        try:
            self._pool.submit(future, self._run, task_id)
        except RuntimeError as exc:  # shut down meanwhile
            self._unregister(task_id)
            future.cancel()
            raise SchedulerShutDown(
                'the interpreter is shutting down: %r started nothing'
                % self) from exc
        future.add_done_callback(
            functools.partial(self._finish_if_cancelled, task_id))
        return task_id

    def _run(self, task_id):
        _pool_thread.scheduler = self
        try:
            # No local variable holds the task, so a traceback through
            # this frame does not hold its arguments.
            return _call(self._claim(task_id))
        finally:
            _pool_thread.scheduler = None
            self._finish(task_id)

    def shutdown(self, wait=True, cancel_futures=False):
        """Stop accepting work; with ``wait``, join the running tasks.

        With ``cancel_futures``, the tasks that have not started yet are
        cancelled (their futures say so) and never run; running ones
        always run to their end.  Harmless when called twice or before
        any start.  Called from one of this scheduler's own tasks it does
        not wait (a thread cannot join itself).
        """
        self._closed = True
        in_own_pool = getattr(_pool_thread, 'scheduler', None) is self
        self._pool.shutdown(wait=wait and not in_own_pool,
                            cancel_futures=cancel_futures)


class BlockingScheduler(BackgroundScheduler):
    """A scheduler whose ``start()`` runs the pool in the foreground.

    ``start(fn, ...)`` starts ``fn`` and returns its task id only after
    ``shutdown()`` was called (by ``fn``, another task, a signal handler
    or another thread) and the pool's tasks have ended.  Tasks may start
    more tasks meanwhile with ``start_nowait()``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shutdown_called = threading.Event()

    def start_nowait(self, fn, args=(), kwargs=None):
        """Start ``fn`` like BackgroundScheduler.start and return at once."""
        return super().start(fn, args, kwargs)

    def start(self, fn, args=(), kwargs=None):
        """Start ``fn``; return its task id once shutdown() was called and
        the started tasks ended."""
        task_id = self.start_nowait(fn, args, kwargs)
        self._shutdown_called.wait()
        self._pool.shutdown(wait=True)
        return task_id

    def shutdown(self, wait=True, cancel_futures=False):
        """Let ``start()`` return; otherwise as BackgroundScheduler's."""
        super().shutdown(wait=False, cancel_futures=cancel_futures)
        self._shutdown_called.set()
        in_own_pool = getattr(_pool_thread, 'scheduler', None) is self
        if wait and not in_own_pool:
            self._pool.shutdown(wait=True)


@implementer(IScheduler)
class ImmediateScheduler(_Tasks):
    """Runs each started callable at once and synchronously, in a fresh
    daemon thread named 'cipher.background.immediate' that the caller
    joins.

    The callable so starts with a clean thread: no site, no security
    interaction and no transaction of the caller, whose own stay as they
    were.  ``start()`` returns the task id after the callable ended; its
    future is resolved by then.  An Exception is kept in the future, not
    raised.  A KeyboardInterrupt, SystemExit (any BaseException that is
    not an Exception) is set on the future and raised again in the
    caller.  When Ctrl-C interrupts the caller's wait, the
    KeyboardInterrupt goes up at once and the callable runs on.
    """

    def __init__(self, keep_finished=1000):
        super().__init__(keep_finished)
        self._threads = set()

    def start(self, fn, args=(), kwargs=None):
        """Run ``fn(*args, **kwargs)`` in a new thread, wait for it to end
        and return the task id.

        ArgumentTypeError (a TypeError) for a non-callable or bad
        arguments; SchedulerShutDown after shutdown(), and nothing runs.
        """
        _check_callable(fn, args, kwargs)
        task_id = new_id()
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()   # never queued
        thread = threading.Thread(
            target=self._run, args=(task_id, future),
            name='cipher.background.immediate', daemon=True)
        with self._lock:
            self._check_open()
            self._register(task_id, Task(fn, tuple(args),
                                         dict(kwargs or {})), future)
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:   # no thread to be had
            with self._lock:
                self._threads.discard(thread)
            self._finish(task_id)
            future.set_exception(exc)
            raise
        thread.join()
        error = future.exception(0)
        if error is not None and not isinstance(error, Exception):
            raise error
        return task_id

    def _run(self, task_id, future):
        try:
            try:
                result = _call(self._claim(task_id))
            finally:
                self._finish(task_id)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def shutdown(self, wait=True, cancel_futures=False):
        """Accept no more tasks (start() raises SchedulerShutDown); with
        ``wait``, join the callables still running (those whose caller
        was interrupted, or started by other threads).  Nothing is ever
        queued, so ``cancel_futures`` has nothing to cancel; it is taken
        for symmetry with BackgroundScheduler.  Harmless when called
        again."""
        with self._lock:
            self._closed = True
            running = [thread for thread in self._threads
                       if thread is not threading.current_thread()]
        if wait:
            for thread in running:
                thread.join()


def task(scheduler):
    """Decorator: give a function ``fn.start(*args, **kwargs)`` that runs it
    on ``scheduler`` and returns the task id.  ``fn()`` stays a plain,
    synchronous call.  ArgumentTypeError (a TypeError) when ``scheduler``
    has no start()."""
    if not callable(getattr(scheduler, 'start', None)):
        raise ArgumentTypeError(
            'task() takes a scheduler (an object with start()), not %r; '
            'write @task(scheduler), not @task' % (scheduler,))

    def decorate(fn):
        def start(*args, **kwargs):
            return scheduler.start(fn, args, kwargs)
        fn.start = start
        return fn
    return decorate
