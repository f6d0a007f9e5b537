"""Per-thread capture of what code prints and logs.

While a job runs, ``print()`` (to ``sys.stdout`` or ``sys.stderr``) and
logging records are also handed to that job's sink; they still reach the
real streams and the normal log handlers.  Other threads are untouched,
and the sink is removed when the job ends, so nothing leaks into the next
job that reuses the pool thread.
"""
import logging
import sys
import threading

_local = threading.local()
_install_lock = threading.Lock()


def _sink():
    return getattr(_local, 'sink', None)


class _TeeStream:
    """Writes to the wrapped stream, and to the thread's sink if any."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        sink = _sink()
        if sink is not None:
            sink(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _SinkHandler(logging.Handler):
    """Hands log records of a capturing thread to its sink."""

    def emit(self, record):
        sink = _sink()
        if sink is not None:
            try:
                sink(self.format(record) + '\n')
            except Exception:  # pragma: no cover (logging's own contract)
                self.handleError(record)


_handler = _SinkHandler()
_handler.setFormatter(logging.Formatter('%(levelname)s %(name)s %(message)s'))


def _installed():
    return (isinstance(sys.stdout, _TeeStream)
            and isinstance(sys.stderr, _TeeStream)
            and _handler in logging.getLogger().handlers)


def _install():
    with _install_lock:
        for name in ('stdout', 'stderr'):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _TeeStream):
                setattr(sys, name, _TeeStream(stream))
        root = logging.getLogger()
        if _handler not in root.handlers:
            root.addHandler(_handler)


class captured:
    """Hand what this thread prints and logs to ``sink(text)`` in the
    ``with`` block.  (A class, not a generator: it runs once per job.)"""

    def __init__(self, sink):
        self._sink = sink
        self._previous = None

    def __enter__(self):
        if not _installed():  # somebody replaced sys.stdout, or first use
            _install()
        self._previous = _sink()
        _local.sink = self._sink

    def __exit__(self, *exc_info):
        _local.sink = self._previous
        return False
