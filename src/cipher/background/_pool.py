"""A pool of daemon threads behind the BackgroundScheduler.

Like ``concurrent.futures.ThreadPoolExecutor`` (a call's outcome goes to
a ``Future``; ``shutdown(wait, cancel_futures)``), with one difference that
matters at interpreter exit: its threads are daemon threads that Python
does not join.  ThreadPoolExecutor's threads are joined before anything
else runs at exit, so a job that never ends would hang the process before
the library could ask it to stop; here the library's own exit handling
(:mod:`cipher.background.shutdown`) asks running jobs to stop and bounds
the wait by its grace time.
"""
import collections
import logging
import threading

log = logging.getLogger(__name__)

_local = threading.local()   # .idle_hooks: of this pool thread


def when_idle(key, fn):
    """In a pool thread: call ``fn()`` once this thread runs out of work
    (before it waits for more, or when the pool shuts down); a later call
    with the same ``key`` replaces it.  Returns False, doing nothing,
    outside a pool thread."""
    hooks = getattr(_local, 'idle_hooks', None)
    if hooks is None:
        return False
    hooks[key] = fn
    return True


def _run_hooks(hooks):
    due = list(hooks.values())
    hooks.clear()
    for fn in due:
        try:
            fn()
        except Exception:
            log.exception('Error in an idle hook of a pool thread')


class DaemonPool:
    """Runs submitted calls in up to ``max_workers`` daemon threads,
    started as work arrives."""

    def __init__(self, max_workers, name_prefix):
        self.max_workers = max_workers
        self.name_prefix = name_prefix
        self._ready = threading.Condition()
        self._queue = collections.deque()   # (future, fn, args)
        self._threads = []
        self._idle = 0
        self._shut_down = False

    def submit(self, future, fn, *args):
        """Queue ``fn(*args)``, whose outcome goes to ``future`` (a
        ``concurrent.futures.Future``, pending).  RuntimeError after
        shutdown()."""
        with self._ready:
            if self._shut_down:
                raise RuntimeError('cannot schedule new work after shutdown')
            self._queue.append((future, fn, args))
            if (len(self._queue) > self._idle
                    and len(self._threads) < self.max_workers):
                thread = threading.Thread(
                    target=self._work, daemon=True, name='%s_%d' % (
                        self.name_prefix, len(self._threads)))
                self._threads.append(thread)
                thread.start()
            else:
                self._ready.notify()

    def waiting(self):
        """How many calls are queued and not started yet."""
        with self._ready:
            return len(self._queue)

    def _work(self):
        _local.idle_hooks = hooks = {}
        try:
            self._loop(hooks)
        finally:
            _run_hooks(hooks)

    def _loop(self, hooks):
        while True:
            with self._ready:
                idle_now = not self._queue and hooks
                if not idle_now:
                    while not self._queue and not self._shut_down:
                        self._idle += 1
                        self._ready.wait()
                        self._idle -= 1
                    if not self._queue:
                        return  # shut down, and nothing left to do
                    future, fn, args = self._queue.popleft()
            if idle_now:
                _run_hooks(hooks)  # outside the lock, then look again
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                # Kept in the future; KeyboardInterrupt or SystemExit in
                # one call does not end the pool thread.
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn, args

    def shutdown(self, wait=True, cancel_futures=False):
        """Accept no more work; with ``cancel_futures`` cancel the calls
        not started yet; with ``wait`` join the threads (not the calling
        one, if it is a pool thread)."""
        with self._ready:
            self._shut_down = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._ready.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()
