"""A worker thread that runs ``doWork()`` every ``interval`` seconds."""
import time

from cipher.background.errors import ConfigurationError
from cipher.background.thread import BackgroundWorkerThread


class PeriodicBackgroundWorkerThread(BackgroundWorkerThread):
    """Runs ``doWork()`` every ``interval`` seconds, the first time at once.

    The interval is a class attribute or the ``interval`` argument.  It is
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
        if (isinstance(self.interval, bool)
                or not isinstance(self.interval, (int, float))
                or not self.interval > 0):
            raise ConfigurationError(
                'interval must be a positive number of seconds, not %r; '
                'set it as a class attribute or pass interval=' % (
                    self.interval,))
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
