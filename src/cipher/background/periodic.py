"""A worker thread that runs ``doWork()`` every ``interval`` seconds."""
import numbers
import threading
import time

from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.thread import BackgroundWorkerThread


def _check_interval(interval):
    """Refuse an interval that is not a finite real number > 0.

    None (no interval set) and zero, a negative number, nan, infinity or
    more than ``threading.TIMEOUT_MAX`` (which a wait cannot take) are
    ConfigurationErrors; a wrong type (a str, a bool) is an
    ArgumentTypeError.
    """
    if interval is None:
        raise ConfigurationError(
            'interval must be a positive number of seconds, but none was '
            'given; set it as a class attribute or pass interval=')
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real):
        raise ArgumentTypeError(
            'interval must be a positive number of seconds, not %r '
            '(of type %s); set it as a class attribute or pass interval= '
            'an int or a float' % (interval, type(interval).__name__))
    # "not > 0" also catches nan, which compares False with everything.
    if not interval > 0 or interval > threading.TIMEOUT_MAX:
        raise ConfigurationError(
            'interval must be a positive number of seconds, finite and at '
            'most %d, not %r; set it as a class attribute or pass '
            'interval=' % (threading.TIMEOUT_MAX, interval))


class PeriodicBackgroundWorkerThread(BackgroundWorkerThread):
    """Runs ``doWork()`` every ``interval`` seconds, the first time at once.

    The interval is a class attribute or the ``interval`` argument: a
    finite real number of seconds > 0, checked at construction (a wrong
    type, such as a str or a bool, raises ArgumentTypeError; None, zero, a
    negative number, nan, infinity or more than ``threading.TIMEOUT_MAX``
    raises ConfigurationError).  It is
    measured from the start of one unit to the start of the next, so slow
    units do not make the schedule drift; a unit that takes longer than the
    interval is followed by the next one at once.  ``stop()`` wakes the
    wait immediately.  ``clock`` is injectable for tests.
    """

    description = ("periodic background worker thread (%(class_name)s) "
                   "for %(site_name)s")

    #: Seconds between the starts of two units.
    interval = None

    def __init__(self, site_db, site_oid, site_name, user_name, daemon=True,
                 retry_policy=None, interval=None, clock=None):
        if interval is not None:
            self.interval = interval
        _check_interval(self.interval)
        self.clock = clock or time.monotonic
        self._next_run = None
        super().__init__(site_db, site_oid, site_name, user_name,
                         daemon=daemon, retry_policy=retry_policy)

    def scheduleNextWork(self):
        """Wait until the next run is due; False once stopped."""
        if self._next_run is not None:
            delay = self._next_run - self.clock()
            if delay > 0 and not self.wait(delay):
                return False
        if self.stopped:
            return False
        self._next_run = self.clock() + self.interval
        return True
