"""Stopping background work: on request, and at interpreter exit.

Runners (the worker threads of :mod:`cipher.background.thread`, the job
runtime of :mod:`cipher.background.jobs`) register themselves here with
two calls: ``request_stop()`` asks all their work to stop and returns at
once; ``join(deadline)`` waits until ``deadline`` (a ``time.monotonic()``
value, or None) and returns what is still alive.

At interpreter exit every runner is asked to stop as soon as the main
thread ends (before Python joins non-daemon threads, which would
otherwise wait forever), then given :data:`EXIT_GRACE_SECONDS` in all to
finish, from an ``atexit`` handler that runs before the handlers
registered earlier (such as the application's ``db.close``).  Only public
calls of ``threading`` and ``atexit`` are used.
"""
import atexit
import threading
import time

from cipher.background.errors import ArgumentTypeError

#: Seconds that live workers and jobs get, in all, to finish at exit.
EXIT_GRACE_SECONDS = 10.0

_runners = []
_lock = threading.Lock()
_watcher = None


def register(runner):
    """Stop ``runner`` with the others (see the module docstring)."""
    with _lock:
        if runner not in _runners:
            _runners.append(runner)


def request_stop_all():
    """Ask every registered runner to stop; return at once."""
    with _lock:
        runners = list(_runners)
    for runner in runners:
        runner.request_stop()


def stop_all(timeout=None):
    """Ask all workers and jobs to stop, then wait for them up to
    ``timeout`` seconds in all; return those still alive (workers, and the
    ids of jobs still running)."""
    if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 <= timeout < float('inf')):
        raise ArgumentTypeError(
            'timeout must be None or a number of seconds >= 0, not %r'
            % (timeout,))
    request_stop_all()
    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        runners = list(_runners)
    alive = []
    for runner in runners:
        alive.extend(runner.join(deadline))
    return alive


def remaining(deadline):
    """Seconds until ``deadline`` (None: no limit), never negative."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _stop_when_main_thread_ends():
    threading.main_thread().join()
    request_stop_all()


def _stop_at_exit():
    stop_all(EXIT_GRACE_SECONDS)


def arm_exit_hook():
    """Make sure work is stopped at exit; called when work starts.

    Re-registering moves the ``atexit`` handler behind the ones registered
    meanwhile, so it runs before them (``atexit`` runs the last first).
    """
    global _watcher
    with _lock:
        if _watcher is None:
            _watcher = threading.Thread(
                target=_stop_when_main_thread_ends, daemon=True,
                name='cipher.background exit watcher')
            _watcher.start()
    atexit.unregister(_stop_at_exit)
    atexit.register(_stop_at_exit)
