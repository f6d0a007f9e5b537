"""The retry policy: which errors are transient, and how long to wait.

A unit of work that fails with a transient error (a ZODB conflict, a
storage that went away) is aborted and run again in a fresh transaction.
The policy is one small object: it decides *whether* to retry (before the
transaction is aborted, because data managers that joined it may vote)
and *how long* to wait first, and it keeps the count.  Running the unit is
the job of :mod:`cipher.background.context`.

Waits use full-jitter exponential backoff: before attempt ``n + 1`` the
policy waits ``uniform(0, min(max_delay, base_delay * 2 ** n))``.  A
``ZEO.Exceptions.ClientDisconnected`` means the server is away, not that
another transaction won a race, so it is retried with its own, longer
backoff and time budget and does not use up the conflict attempts.
"""
import random as _random
import time

from transaction.interfaces import TransientError
from ZEO.Exceptions import ClientDisconnected
from zope.interface import implementer

from cipher.background.errors import ConfigurationError
from cipher.background.errors import RetriesExhausted
from cipher.background.interfaces import IRetryPolicy


def _sleep(seconds, stop_event=None):
    """Wait ``seconds``; return True when ``stop_event`` was set meanwhile."""
    if stop_event is None:
        time.sleep(seconds)
        return False
    return stop_event.wait(seconds)


@implementer(IRetryPolicy)
class RetryPolicy:
    """Retry transient errors with full-jitter exponential backoff.

    Every setting is a class attribute and a keyword argument, so a worker
    class can carry its own policy::

        class Indexer(BackgroundWorkerThread):
            retry_policy = RetryPolicy(attempts=10, time_budget=120)

    ``sleep(seconds, stop_event)`` (returning True when interrupted),
    ``random()`` and ``clock()`` are injectable for tests.
    """

    #: Attempts in all (the first run included) for conflicts.
    attempts = 20
    #: Backoff base and cap for conflicts, in seconds.
    base_delay = 0.005
    max_delay = 1.0
    #: Seconds after the first failure after which no retry starts.
    time_budget = 60.0
    #: Backoff base and cap while the storage server is unreachable.
    disconnect_base_delay = 0.25
    disconnect_max_delay = 10.0
    #: Seconds a unit keeps waiting for a disconnected server to return.
    disconnect_time_budget = 300.0

    def __init__(self, sleep=None, random=None, clock=None, **settings):
        for name, value in settings.items():
            if not hasattr(type(self), name) or name.startswith('_'):
                raise ConfigurationError(
                    'RetryPolicy has no setting %r; use one of attempts, '
                    'base_delay, max_delay, time_budget, '
                    'disconnect_base_delay, disconnect_max_delay, '
                    'disconnect_time_budget' % name)
            setattr(self, name, value)
        self._check()
        self.sleep = sleep or _sleep
        self.random = random or _random.random
        self.clock = clock or time.monotonic

    def _check(self):
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigurationError(
                'RetryPolicy attempts must be a whole number >= 1, not %r; '
                'use 1 to never retry' % (self.attempts,))
        for name in ('base_delay', 'max_delay', 'time_budget',
                     'disconnect_base_delay', 'disconnect_max_delay',
                     'disconnect_time_budget'):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(
                    'RetryPolicy %s must be a number of seconds >= 0, '
                    'not %r' % (name, value))

    def __repr__(self):
        return '<RetryPolicy attempts=%d time_budget=%gs>' % (
            self.attempts, self.time_budget)

    def isTransient(self, error, transaction_manager=None):
        """See IRetryPolicy."""
        if isinstance(error, TransientError):
            return True
        if transaction_manager is None:
            return False
        # Data managers that joined the transaction may know better (the
        # transaction package asks them the same way); ask before abort(),
        # which makes them leave.
        for resource in transaction_manager.get()._resources:
            should_retry = getattr(resource, 'should_retry', None)
            if should_retry is not None and should_retry(error):
                return True
        return False

    def isDisconnect(self, error):
        """See IRetryPolicy."""
        return isinstance(error, ClientDisconnected)

    def begin(self):
        """See IRetryPolicy."""
        return _Attempts(self)

    def delay(self, retry_number, disconnected=False):
        """The full-jitter wait before retry number ``retry_number``
        (0 for the first retry)."""
        if disconnected:
            base, cap = self.disconnect_base_delay, self.disconnect_max_delay
        else:
            base, cap = self.base_delay, self.max_delay
        # Cap the exponent: 2 ** 1000 would be an OverflowError in float.
        ceiling = min(cap, base * 2 ** min(retry_number, 64))
        return self.random() * ceiling


class _Attempts:
    """The retry bookkeeping of one unit: how many attempts, since when."""

    def __init__(self, policy):
        self.policy = policy
        self.number = 1          # the attempt running now
        self.conflicts = 0
        self.disconnects = 0
        self.started = policy.clock()

    def backoff(self, error):
        """Account for transient ``error``; return the seconds to wait
        before the next attempt, or raise RetriesExhausted."""
        policy = self.policy
        elapsed = policy.clock() - self.started
        if policy.isDisconnect(error):
            if elapsed >= policy.disconnect_time_budget:
                raise RetriesExhausted(
                    self.number, error, 'server away for %.0fs' % elapsed
                ) from error
            delay = policy.delay(self.disconnects, disconnected=True)
            self.disconnects += 1
        else:
            if self.conflicts + 1 >= policy.attempts:
                raise RetriesExhausted(self.number, error) from error
            if elapsed >= policy.time_budget:
                raise RetriesExhausted(
                    self.number, error,
                    'time budget of %gs spent' % policy.time_budget
                ) from error
            delay = policy.delay(self.conflicts)
            self.conflicts += 1
        self.number += 1
        return delay

    def wait(self, seconds, stop_event=None):
        """Sleep before the next attempt; True when a stop interrupted."""
        if seconds <= 0:
            return stop_event is not None and stop_event.is_set()
        return self.policy.sleep(seconds, stop_event)


#: The policy used when a worker or job names none.
DEFAULT_POLICY = RetryPolicy()
