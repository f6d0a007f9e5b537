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
import math
import numbers
import random as _random
import threading
import time

from transaction.interfaces import NoTransaction
from transaction.interfaces import TransientError
from ZEO.Exceptions import ClientDisconnected
from zope.interface import implementer

from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import RetriesExhausted
from cipher.background.interfaces import IRetryPolicy

#: Waits: finite, so that no single wait can last forever.
_DELAYS = ('base_delay', 'max_delay',
           'disconnect_base_delay', 'disconnect_max_delay')
#: Budgets: ``float('inf')`` is allowed and means "never give up on time".
_BUDGETS = ('time_budget', 'disconnect_time_budget')
#: (base, cap) pairs: a base above its cap makes no sense.
_PAIRS = (('base_delay', 'max_delay'),
          ('disconnect_base_delay', 'disconnect_max_delay'))


def _sleep(seconds, stop_event=None):
    """Wait ``seconds``; return True when ``stop_event`` was set meanwhile."""
    if stop_event is None:
        time.sleep(seconds)
        return False
    return stop_event.wait(seconds)


def _check_attempts(value):
    """Refuse anything but an int >= 1 (a bool is no count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(
            'RetryPolicy attempts must be a whole number >= 1, not %r '
            '(of type %s); pass an int, such as 10, or 1 to never retry' % (
                value, type(value).__name__))
    if value < 1:
        raise ConfigurationError(
            'RetryPolicy attempts must be a whole number >= 1, not %r; '
            'use 1 to never retry' % (value,))


def _check_seconds(name, value, infinite_ok):
    """Refuse anything but a real number of seconds >= 0; never nan, and
    infinity only when ``infinite_ok``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            'RetryPolicy %s must be a number of seconds >= 0, not %r '
            '(of type %s); pass an int or a float' % (
                name, value, type(value).__name__))
    if value != value:  # nan: every comparison with it is False
        raise ConfigurationError(
            'RetryPolicy %s must be a number of seconds >= 0, not nan; '
            'pass an int or a float' % name)
    if value < 0:
        raise ConfigurationError(
            'RetryPolicy %s must be a number of seconds >= 0, not %r; '
            'use 0 for no wait' % (name, value))
    if value == math.inf and not infinite_ok:
        raise ConfigurationError(
            'RetryPolicy %s must be a finite number of seconds >= 0, not '
            'inf: a wait could last forever; pass a finite number such '
            'as 60' % name)
    if value > threading.TIMEOUT_MAX and not infinite_ok:
        raise ConfigurationError(
            'RetryPolicy %s must be at most %d seconds (the longest wait '
            'Python can take), not %r; pass a smaller number' % (
                name, threading.TIMEOUT_MAX, value))


def _check_callable(name, value):
    if not callable(value):
        raise ArgumentTypeError(
            'RetryPolicy %s must be callable, not %r (of type %s); pass the '
            'function itself, or leave it out for the default' % (
                name, value, type(value).__name__))


@implementer(IRetryPolicy)
class RetryPolicy:
    """Retry transient errors with full-jitter exponential backoff.

    Every setting is a class attribute and a keyword argument, so a worker
    class can carry its own policy::

        class Indexer(BackgroundWorkerThread):
            retry_policy = RetryPolicy(attempts=10, time_budget=120)

    The settings are checked when the policy is created (class attributes
    of a subclass included); a bad one raises
    :class:`~cipher.background.errors.ArgumentTypeError` when it is of the
    wrong type (a str, a bool, a float number of attempts) and
    :class:`~cipher.background.errors.ConfigurationError` when its value
    is out of range:

    * ``attempts``: an int >= 1.
    * ``base_delay``, ``max_delay``, ``disconnect_base_delay``,
      ``disconnect_max_delay``: finite real numbers of seconds >= 0 (at
      most ``threading.TIMEOUT_MAX``, the longest wait Python can take),
      each base no greater than its cap.
    * ``time_budget``, ``disconnect_time_budget``: real numbers of seconds
      >= 0; ``float('inf')`` is allowed and means "never give up on time"
      (``attempts`` still limits conflicts; disconnects are then retried
      until the server returns or the worker is stopped).

    No setting may be nan or a bool.  ``sleep(seconds, stop_event)``
    (returning True when interrupted), ``random()`` and ``clock()`` are
    injectable for tests and must be callable.
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
            if not self._isSetting(name):
                raise ConfigurationError(
                    'RetryPolicy has no setting %r; use one of attempts, '
                    'base_delay, max_delay, time_budget, '
                    'disconnect_base_delay, disconnect_max_delay, '
                    'disconnect_time_budget' % name)
            setattr(self, name, value)
        self._check()
        for name, value in (('sleep', sleep), ('random', random),
                            ('clock', clock)):
            if value is not None:
                _check_callable(name, value)
        self.sleep = _sleep if sleep is None else sleep
        self.random = _random.random if random is None else random
        self.clock = time.monotonic if clock is None else clock

    @classmethod
    def _isSetting(cls, name):
        """A setting is a public class attribute that is not a method."""
        return (not name.startswith('_') and hasattr(cls, name)
                and not callable(getattr(cls, name)))

    def _check(self):
        _check_attempts(self.attempts)
        for name in _DELAYS:
            _check_seconds(name, getattr(self, name), infinite_ok=False)
        for name in _BUDGETS:
            _check_seconds(name, getattr(self, name), infinite_ok=True)
        for base, cap in _PAIRS:
            if getattr(self, base) > getattr(self, cap):
                raise ConfigurationError(
                    'RetryPolicy %s (%r) must not exceed %s (%r); lower '
                    '%s or raise %s' % (base, getattr(self, base), cap,
                                        getattr(self, cap), base, cap))

    def __repr__(self):
        if self.time_budget == math.inf:
            budget = 'unlimited'
        elif self.time_budget > 1e15:  # '%g' cannot take a huge int
            budget = 'over 1e15s'
        else:
            budget = '%gs' % self.time_budget
        return '<RetryPolicy attempts=%d time_budget=%s>' % (
            self.attempts, budget)

    def isTransient(self, error, transaction_manager=None):
        """See IRetryPolicy.

        True for a ``TransientError``.  Otherwise, with a
        ``transaction_manager``, the manager's current transaction is
        asked through its public ``isRetryableError()``, which lets the
        data managers joined to it vote through ``should_retry``.

        Ask before ``abort()``: aborting frees the transaction and its
        data managers leave it.  A freed transaction cannot be asked at
        all (its ``isRetryableError`` fails, having no manager any more),
        so the transaction is never kept: it is fetched from the manager
        at the moment of asking, and is then the manager's current one,
        never a freed one.  After ``abort()`` that is a fresh, empty
        transaction, so only a ``TransientError`` counts.  An explicit
        manager with no transaction begun has nobody to vote: False.
        """
        if isinstance(error, TransientError):
            return True
        if transaction_manager is None:
            return False
        try:
            current = transaction_manager.get()
        except NoTransaction:
            return False
        return bool(current.isRetryableError(error))

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
