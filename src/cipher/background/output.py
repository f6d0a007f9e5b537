"""Per-job capture of what a job logs, and a stream for what it prints.

Inside ``with captured(sink):`` (jobs.py wraps each job's run in one) two
things are handed to ``sink(text)``:

* every log record created in that thread (and in contexts copied from
  it, such as asyncio tasks) by a logger *enabled* for the record's level,
  as ``'%(levelname)s %(name)s %(message)s\\n'`` plus the traceback if
  any.  Records are taken when created (the record factory runs after the
  level check), so a record a filter or handler drops is still captured,
  one of a logger disabled for its level never is;
* whatever is written to :func:`job_output`, as in
  ``print('step 2 of 5', file=job_output())``.

Not captured: ``print()`` to ``sys.stdout``/``sys.stderr``, and any other
direct write to those streams; they go where they go without the library.

The guarantee: the process is unchanged apart from one pass-through log
record factory, installed on the first ``captured()``.  ``sys.stdout``,
``sys.stderr`` and every logger's handlers are never touched, and every
record is returned by the factory unchanged, so handlers, levels,
``logging.lastResort``, ``logging.basicConfig()`` and
``contextlib.redirect_stdout`` behave exactly as without the library.
"""
import contextvars
import io
import logging
import threading

from cipher.background.errors import NotInJob

__all__ = ['captured', 'job_output']

#: The capture in effect in this thread (context), or None.
_current = contextvars.ContextVar('cipher.background.output', default=None)
_install_lock = threading.Lock()
_traceback_formatter = logging.Formatter()


def _format(record):
    # Built by hand rather than with Formatter.format(), which would cache
    # message and exc_text on the record and so change what handlers see.
    lines = ['%s %s %s' % (record.levelname, record.name, record.getMessage())]
    if record.exc_info:
        lines.append(_traceback_formatter.formatException(record.exc_info))
    if record.stack_info:
        lines.append(_traceback_formatter.formatStack(record.stack_info))
    return '\n'.join(lines) + '\n'


class _CapturingFactory:
    """A log record factory: calls the previous one, hands the record to
    the capture of this thread, if any, and returns it unchanged."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, *args, **kwargs):
        capture = _current.get()
        if capture is None or not capture._active:
            return self.previous(*args, **kwargs)
        # With no capture in effect meanwhile, another copy of this factory
        # further down the chain passes the record through (no duplicate),
        # and what the sink itself logs is not fed back into it.
        token = _current.set(None)
        try:
            record = self.previous(*args, **kwargs)
            # name None: the blank record logging.makeLogRecord() fills in.
            if record.name is not None:
                try:
                    capture._sink(_format(record))
                except Exception:
                    pass  # capturing must never break the logging call
        finally:
            _current.reset(token)
        return record


def _install():
    with _install_lock:
        factory = logging.getLogRecordFactory()
        if type(factory) is not _CapturingFactory:
            logging.setLogRecordFactory(_CapturingFactory(factory))


class captured:
    """Hand what this thread logs and writes to :func:`job_output` to
    ``sink(text)`` in the ``with`` block (see the module docstring).

    Nested blocks in one thread: the inner sink gets everything until the
    inner block ends, then the outer sink again.  An instance serves one
    ``with`` block at a time.  (A class, not a generator: it runs once per
    job, and entering is one ContextVar.set() once the factory is in place.)
    """

    __slots__ = ('_sink', '_token', '_active')

    def __init__(self, sink):
        self._sink = sink
        self._token = None
        self._active = False

    def __enter__(self):
        # Also true when somebody set another factory after ours: wrap that.
        if type(logging.getLogRecordFactory()) is not _CapturingFactory:
            _install()
        self._token = _current.set(self)
        self._active = True

    def __exit__(self, *exc_info):
        self._active = False
        _current.reset(self._token)
        return False


class _JobOutput(io.TextIOBase):
    """A text stream into the output of the job it was made in."""

    def __init__(self, capture):
        self._capture = capture

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError('write() argument must be str, not %s'
                            % type(text).__name__)
        if not self._capture._active:
            raise NotInJob('this job_output() stream belongs to a job that '
                           'has ended; call job_output() in the running job '
                           'for each print(..., file=job_output()).')
        if text:
            token = _current.set(None)  # what the sink logs is not fed back
            try:
                self._capture._sink(text)
            finally:
                _current.reset(token)
        return len(text)

    def flush(self):
        """Nothing to do: every write reaches the sink at once."""


def job_output():
    """A writable text stream into the running job's output.

    Use it as ``print(..., file=job_output())`` in the job's code.  The
    stream writes into the output of the job running in the calling
    thread, also when handed to another thread, until that job ends;
    writing after that raises :class:`~cipher.background.errors.NotInJob`.
    Outside a running job (outside ``captured()``), raises ``NotInJob``.
    """
    capture = _current.get()
    if capture is None or not capture._active:
        raise NotInJob('job_output() works only inside a running job, in '
                       "the job's thread; use it in the job's code as "
                       "print(..., file=job_output()).")
    return _JobOutput(capture)
