"""Thread-pool schedulers: run callables in the background, by task id.

:class:`BackgroundScheduler` runs each started callable in a pool of
threads and hands back a task id at once.  :class:`BlockingScheduler`
does the same, but its ``start()`` keeps the caller in the foreground
until somebody calls ``shutdown()``.  :class:`ImmediateScheduler` runs
the callable at once in the calling thread (for tests).  The :func:`task`
decorator gives a function ``fn.start(*args, **kwargs)``.
"""
import collections
import concurrent.futures
import os
import threading

from zope.interface import implementer

from cipher.background.errors import ConfigurationError
from cipher.background.errors import SchedulerShutDown
from cipher.background.interfaces import IScheduler

#: What was started: the callable and its arguments.
Task = collections.namedtuple('Task', 'fn args kwargs')

_pool_thread = threading.local()


def new_id():
    """A fresh task or job id: 32 hex digits from the system's random
    source, so unguessable and never reused (what uuid4().hex holds, at a
    fifth of its cost)."""
    return os.urandom(16).hex()


def _check_callable(fn, args, kwargs):
    if not callable(fn):
        raise TypeError(
            'expected a callable to run in the background, got %r; pass '
            'the function itself, not its result' % (fn,))
    if not isinstance(args, (tuple, list)):
        raise TypeError('args must be a tuple or list, not %r' % (args,))
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError('kwargs must be a dict, not %r' % (kwargs,))


@implementer(IScheduler)
class BackgroundScheduler:
    """Runs callables in a pool of ``max_workers`` threads.

    The ``task`` and ``future`` mappings hold every unfinished task and
    the last ``keep_finished`` finished ones.
    """

    def __init__(self, max_workers=None, keep_finished=1000,
                 thread_name_prefix='cipher.background'):
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                or max_workers < 1):
            raise ConfigurationError(
                'max_workers must be a whole number >= 1, not %r'
                % (max_workers,))
        if (isinstance(keep_finished, bool)
                or not isinstance(keep_finished, int) or keep_finished < 0):
            raise ConfigurationError(
                'keep_finished must be a whole number >= 0, not %r'
                % (keep_finished,))
        self.max_workers = max_workers
        self.keep_finished = keep_finished
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=thread_name_prefix)
        self._lock = threading.Lock()
        self._tasks = {}
        self._futures = {}
        self._finished = collections.deque()
        self._stopped = False
        self._latest_id = None

    def __repr__(self):
        return '<%s max_workers=%d%s>' % (
            type(self).__name__, self.max_workers,
            ' stopped' if self._stopped else '')

    @property
    def stopped(self):
        """True once shutdown() was called."""
        return self._stopped

    @property
    def latest_id(self):
        """The id of the task started last, or None."""
        return self._latest_id

    @property
    def task(self):
        """A copy of the mapping task id -> Task(fn, args, kwargs)."""
        with self._lock:
            return dict(self._tasks)

    @property
    def future(self):
        """A copy of the mapping task id -> concurrent.futures.Future."""
        with self._lock:
            return dict(self._futures)

    def start(self, fn, args=(), kwargs=None):
        """Run ``fn(*args, **kwargs)`` in the pool; return its task id.

        TypeError for a non-callable; SchedulerShutDown after shutdown().
        """
        _check_callable(fn, args, kwargs)
        task = Task(fn, tuple(args), dict(kwargs or {}))
        task_id = new_id()
        with self._lock:
            if self._stopped:
                raise SchedulerShutDown(
                    '%r was shut down; nothing was started. Create a new '
                    'scheduler to run more work' % self)
            future = self._executor.submit(self._run, task_id, task)
            self._tasks[task_id] = task
            self._futures[task_id] = future
            self._latest_id = task_id
        return task_id

    def _run(self, task_id, task):
        _pool_thread.scheduler = self
        try:
            return task.fn(*task.args, **task.kwargs)
        finally:
            _pool_thread.scheduler = None
            self._forget_later(task_id)

    def _forget_later(self, task_id):
        """Count ``task_id`` as finished; forget the oldest finished ones
        beyond ``keep_finished``."""
        with self._lock:
            self._finished.append(task_id)
            while len(self._finished) > self.keep_finished:
                old = self._finished.popleft()
                self._tasks.pop(old, None)
                self._futures.pop(old, None)

    def shutdown(self, wait=True):
        """Stop accepting work; with ``wait``, join the running tasks.

        Harmless when called twice or before any start.  Called from one
        of this scheduler's own tasks it does not wait (a thread cannot
        join itself).
        """
        with self._lock:
            self._stopped = True
        in_own_pool = getattr(_pool_thread, 'scheduler', None) is self
        self._executor.shutdown(wait=wait and not in_own_pool)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.shutdown(wait=True)


class BlockingScheduler(BackgroundScheduler):
    """A scheduler whose ``start()`` runs the pool in the foreground.

    ``start(fn, ...)`` starts ``fn`` and returns its task id only after
    ``shutdown()`` was called (by ``fn``, another task, a signal handler
    or another thread) and the pool's tasks have ended.  Tasks may start
    more tasks meanwhile with ``start_nowait()``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shut_down = threading.Event()

    def start_nowait(self, fn, args=(), kwargs=None):
        """Start ``fn`` like BackgroundScheduler.start and return at once."""
        return super().start(fn, args, kwargs)

    def start(self, fn, args=(), kwargs=None):
        task_id = self.start_nowait(fn, args, kwargs)
        self._shut_down.wait()
        self._executor.shutdown(wait=True)
        return task_id

    def shutdown(self, wait=True):
        super().shutdown(wait=False)
        self._shut_down.set()
        in_own_pool = getattr(_pool_thread, 'scheduler', None) is self
        if wait and not in_own_pool:
            self._executor.shutdown(wait=True)


@implementer(IScheduler)
class ImmediateScheduler:
    """Runs each started callable at once, in the calling thread.

    For tests: ``start()`` returns after the callable ended; its future is
    already resolved (an exception is kept in the future, not raised).
    """

    def __init__(self):
        self._stopped = False
        self._latest_id = None
        self._tasks = collections.OrderedDict()
        self._futures = collections.OrderedDict()
        self.keep_finished = 1000

    stopped = property(lambda self: self._stopped)
    latest_id = property(lambda self: self._latest_id)
    task = property(lambda self: dict(self._tasks))
    future = property(lambda self: dict(self._futures))

    def start(self, fn, args=(), kwargs=None):
        _check_callable(fn, args, kwargs)
        if self._stopped:
            raise SchedulerShutDown(
                'the immediate scheduler was shut down; nothing was started')
        kwargs = dict(kwargs or {})
        task_id = new_id()
        future = concurrent.futures.Future()
        self._tasks[task_id] = Task(fn, tuple(args), kwargs)
        self._futures[task_id] = future
        self._latest_id = task_id
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        while len(self._tasks) > self.keep_finished:
            old, _ = self._tasks.popitem(last=False)
            self._futures.pop(old)
        return task_id

    def shutdown(self, wait=True):
        self._stopped = True


def task(scheduler):
    """Decorator: give a function ``fn.start(*args, **kwargs)`` that runs it
    on ``scheduler`` and returns the task id.  ``fn()`` stays a plain,
    synchronous call."""
    if not callable(getattr(scheduler, 'start', None)):
        raise TypeError(
            'task() takes a scheduler (an object with start()), not %r; '
            'write @task(scheduler), not @task' % (scheduler,))

    def decorate(fn):
        def start(*args, **kwargs):
            return scheduler.start(fn, args, kwargs)
        fn.start = start
        return fn
    return decorate
