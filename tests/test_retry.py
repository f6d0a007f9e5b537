"""The retry policy: transient errors, full-jitter backoff, limits."""
import threading

import pytest
import transaction
from transaction.interfaces import TransientError
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError
from ZODB.POSException import ReadConflictError
from zope.interface.verify import verifyObject

from cipher.background.errors import ConfigurationError
from cipher.background.errors import RetriesExhausted
from cipher.background.interfaces import IRetryPolicy
from cipher.background.retry import RetryPolicy


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def recording_policy(**settings):
    delays = []

    def sleep(seconds, stop_event=None):
        delays.append(seconds)
        return False
    policy = RetryPolicy(sleep=sleep, random=lambda: 1.0, **settings)
    return policy, delays


def test_policy_provides_its_interface():
    assert verifyObject(IRetryPolicy, RetryPolicy())


@pytest.mark.parametrize('error, transient', [
    (ConflictError(), True),
    (ReadConflictError(), True),
    (ClientDisconnected(), True),
    (TransientError(), True),
    (ValueError(), False),
    (KeyError(), False),
])
def test_transient_errors(error, transient):
    assert RetryPolicy().isTransient(error) is transient


def test_a_joined_data_manager_may_declare_an_error_transient():
    class Votes:
        def __init__(self):
            self.asked = []

        def should_retry(self, error):
            self.asked.append(error)
            return isinstance(error, LookupError)

        def abort(self, txn):
            pass

        def sortKey(self):
            return 'votes'

    manager = transaction.TransactionManager()
    voter = Votes()
    manager.begin().join(voter)
    policy = RetryPolicy()
    assert policy.isTransient(KeyError('x'), manager)
    assert not policy.isTransient(ValueError('x'), manager)
    assert len(voter.asked) == 2
    manager.abort()
    assert not policy.isTransient(KeyError('x'), manager)


def test_full_jitter_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(random=lambda: 1.0, base_delay=0.01, max_delay=0.05)
    assert [policy.delay(n) for n in range(5)] == [
        0.01, 0.02, 0.04, 0.05, 0.05]
    jittered = RetryPolicy(random=lambda: 0.5, base_delay=0.01)
    assert jittered.delay(2) == 0.02
    assert policy.delay(10 ** 6) == 0.05  # no overflow


def test_attempts_are_capped_and_the_error_names_them():
    policy, delays = recording_policy(attempts=3)
    attempts = policy.begin()
    assert attempts.number == 1
    attempts.backoff(ConflictError('first'))
    attempts.backoff(ConflictError('second'))
    assert attempts.number == 3
    with pytest.raises(RetriesExhausted) as info:
        attempts.backoff(ConflictError('third'))
    assert info.value.attempts == 3
    assert 'gave up after 3 attempts' in str(info.value)
    assert 'third' in str(info.value)
    assert isinstance(info.value.__cause__, ConflictError)


def test_time_budget_stops_retries():
    clock = Clock()
    policy = RetryPolicy(clock=clock, time_budget=5, attempts=100)
    attempts = policy.begin()
    attempts.backoff(ConflictError())
    clock.now = 5.0
    with pytest.raises(RetriesExhausted, match='time budget of 5s spent'):
        attempts.backoff(ConflictError())


def test_disconnects_back_off_longer_and_spare_the_attempts():
    clock = Clock()
    policy = RetryPolicy(clock=clock, random=lambda: 1.0, attempts=2,
                         base_delay=0.01, disconnect_base_delay=1,
                         disconnect_max_delay=4, disconnect_time_budget=60)
    attempts = policy.begin()
    delays = [attempts.backoff(ClientDisconnected()) for _ in range(5)]
    assert delays == [1, 2, 4, 4, 4]
    assert attempts.conflicts == 0 and attempts.disconnects == 5
    assert attempts.backoff(ConflictError()) == 0.01  # attempts untouched
    clock.now = 60
    with pytest.raises(RetriesExhausted, match='server away'):
        attempts.backoff(ClientDisconnected())


def test_wait_is_interruptible_by_the_stop_event():
    stop = threading.Event()
    stop.set()
    attempts = RetryPolicy().begin()
    assert attempts.wait(3600, stop) is True  # returns at once
    assert attempts.wait(0, None) is False


@pytest.mark.parametrize('settings, message', [
    (dict(attempts=0), 'attempts must be a whole number >= 1'),
    (dict(attempts=2.5), 'attempts must be a whole number >= 1'),
    (dict(base_delay=-1), 'base_delay must be a number of seconds >= 0'),
    (dict(time_budget='long'), 'time_budget must be a number'),
    (dict(retries=3), "RetryPolicy has no setting 'retries'"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ConfigurationError, match=message):
        RetryPolicy(**settings)


def test_settings_can_be_class_attributes():
    class Patient(RetryPolicy):
        attempts = 20
    assert Patient().attempts == 20
    assert 'attempts=20' in repr(Patient())
