"""The retry policy: transient errors, full-jitter backoff, limits."""
import fractions
import math
import threading

import pytest
import transaction
from transaction.interfaces import IRetryDataManager
from transaction.interfaces import TransientError
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError
from ZODB.POSException import ReadConflictError
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BackgroundError
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
    """A data manager with only the methods the policy needs may vote."""
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


def test_settings_can_be_class_attributes():
    class Patient(RetryPolicy):
        attempts = 20
    assert Patient().attempts == 20
    assert 'attempts=20' in repr(Patient())


# -- data managers voting through the transaction's public API --

@implementer(IRetryDataManager)
class Voter:
    """The smallest data manager: writes nothing, votes on retries."""

    def __init__(self, transaction_manager, retry):
        self.transaction_manager = transaction_manager
        self.retry = retry
        self.asked = []

    def should_retry(self, error):
        self.asked.append(error)
        return self.retry

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        pass

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass

    def sortKey(self):
        return 'cipher.background.tests.Voter:%d' % id(self)


def joined_voter(manager, retry):
    voter = Voter(manager, retry)
    manager.get().join(voter)
    return voter


def test_the_test_data_manager_is_a_data_manager():
    assert verifyObject(IRetryDataManager,
                        Voter(transaction.TransactionManager(), True))


@pytest.mark.parametrize('manager', [
    transaction.TransactionManager(),
    transaction.manager,  # the thread-local default
], ids=['TransactionManager', 'ThreadTransactionManager'])
@pytest.mark.parametrize('vote', [True, False])
def test_a_joined_data_manager_votes_through_isRetryableError(manager, vote):
    manager.begin()
    voter = joined_voter(manager, vote)
    error = ValueError('not transient by type')
    try:
        assert RetryPolicy().isTransient(error, manager) is vote
        assert voter.asked == [error]
    finally:
        manager.abort()


def test_a_transient_error_needs_no_vote():
    manager = transaction.TransactionManager()
    manager.begin()
    voter = joined_voter(manager, False)
    assert RetryPolicy().isTransient(ConflictError(), manager) is True
    assert voter.asked == []
    manager.abort()


def test_without_a_manager_only_the_error_type_counts():
    assert RetryPolicy().isTransient(ValueError()) is False


def test_asked_after_abort_the_fresh_transaction_has_no_voters():
    """A freed transaction cannot be asked; the policy never keeps one."""
    manager = transaction.TransactionManager()
    txn = manager.begin()
    joined_voter(manager, True)
    manager.abort()
    # Why the policy fetches the current transaction at each question:
    # once freed, a transaction has no manager to ask.
    with pytest.raises(AttributeError):
        txn.isRetryableError(ValueError())
    assert RetryPolicy().isTransient(ValueError(), manager) is False
    assert RetryPolicy().isTransient(ConflictError(), manager) is True


def test_an_explicit_manager_without_a_transaction_has_no_voters():
    manager = transaction.TransactionManager(explicit=True)
    assert RetryPolicy().isTransient(ValueError(), manager) is False
    assert RetryPolicy().isTransient(ConflictError(), manager) is True


# -- settings checked at the door --

INF = float('inf')
NAN = float('nan')
DELAYS = ['base_delay', 'max_delay', 'disconnect_base_delay',
          'disconnect_max_delay']
BUDGETS = ['time_budget', 'disconnect_time_budget']

BAD_SETTINGS = [
    (dict(attempts=True), ArgumentTypeError,
     ['attempts must be a whole number >= 1', 'True (of type bool)']),
    (dict(attempts=False), ArgumentTypeError, ['False (of type bool)']),
    (dict(attempts=2.5), ArgumentTypeError,
     ['attempts must be a whole number >= 1', '2.5 (of type float)',
      'pass an int']),
    (dict(attempts=3.0), ArgumentTypeError, ['3.0 (of type float)']),
    (dict(attempts='3'), ArgumentTypeError, ["'3' (of type str)"]),
    (dict(attempts=None), ArgumentTypeError, ['None (of type NoneType)']),
    (dict(attempts=0), ConfigurationError,
     ['attempts must be a whole number >= 1, not 0',
      'use 1 to never retry']),
    (dict(attempts=-3), ConfigurationError, ['not -3']),
    (dict(base_delay=2, max_delay=1), ConfigurationError,
     ['base_delay (2) must not exceed max_delay (1)',
      'lower base_delay or raise max_delay']),
    (dict(max_delay=0.001), ConfigurationError,  # the default base, 0.005
     ['base_delay (0.005) must not exceed max_delay (0.001)']),
    (dict(disconnect_base_delay=30), ConfigurationError,
     ['disconnect_base_delay (30) must not exceed disconnect_max_delay',
      'raise disconnect_max_delay']),
    (dict(retries=3), ConfigurationError,
     ["RetryPolicy has no setting 'retries'", 'use one of attempts']),
    (dict(delay=1), ConfigurationError,  # a method, not a setting
     ["RetryPolicy has no setting 'delay'"]),
    (dict(_check=None), ConfigurationError,
     ["RetryPolicy has no setting '_check'"]),
    (dict(sleep=1), ArgumentTypeError,
     ['sleep must be callable, not 1 (of type int)',
      'pass the function itself']),
    (dict(random=0.5), ArgumentTypeError, ['random must be callable']),
    (dict(clock='monotonic'), ArgumentTypeError,
     ["clock must be callable, not 'monotonic' (of type str)"]),
]
for _name in DELAYS + BUDGETS:
    BAD_SETTINGS += [
        ({_name: True}, ArgumentTypeError,
         [_name + ' must be a number of seconds >= 0', 'True (of type bool)']),
        ({_name: 'long'}, ArgumentTypeError,
         [_name + ' must be a number of seconds', "'long' (of type str)",
          'pass an int or a float']),
        ({_name: None}, ArgumentTypeError, ['None (of type NoneType)']),
        ({_name: NAN}, ConfigurationError, [_name, 'not nan']),
        ({_name: -1}, ConfigurationError,
         [_name + ' must be a number of seconds >= 0, not -1']),
        ({_name: -INF}, ConfigurationError, ['not -inf']),
    ]
for _name in DELAYS:
    _big = dict.fromkeys(DELAYS, 1)  # keep each base no greater than its cap
    BAD_SETTINGS += [
        (dict(_big, **{_name: INF}), ConfigurationError,
         [_name + ' must be a finite number of seconds', 'not inf',
          'a wait could last forever']),
        (dict(_big, **{_name: 1e12}), ConfigurationError,
         [_name + ' must be at most %d seconds' % threading.TIMEOUT_MAX]),
    ]


@pytest.mark.parametrize('settings, error_class, words', BAD_SETTINGS,
                         ids=[repr(case[0]) for case in BAD_SETTINGS])
def test_bad_settings_are_refused(settings, error_class, words):
    with pytest.raises(BackgroundError) as info:
        RetryPolicy(**settings)
    assert type(info.value) is error_class
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize('name, value, error_class', [
    ('attempts', True, ArgumentTypeError),
    ('max_delay', INF, ConfigurationError),
    ('time_budget', NAN, ConfigurationError),
])
def test_bad_class_attributes_are_refused_too(name, value, error_class):
    Bad = type('Bad', (RetryPolicy,), {name: value})
    with pytest.raises(error_class, match=name):
        Bad()


@pytest.mark.parametrize('settings', [
    dict(attempts=1),
    dict(base_delay=0, max_delay=0, disconnect_base_delay=0,
         disconnect_max_delay=0, time_budget=0, disconnect_time_budget=0),
    dict(base_delay=1, max_delay=1),
    dict(base_delay=fractions.Fraction(1, 100), max_delay=2),
    dict(max_delay=threading.TIMEOUT_MAX),
    dict(time_budget=INF, disconnect_time_budget=INF),
    dict(time_budget=10 ** 400),  # larger than any float, still finite
])
def test_good_settings_are_kept(settings):
    policy = RetryPolicy(sleep=lambda s, e=None: False, random=lambda: 0.0,
                         clock=lambda: 0.0, **settings)
    for name, value in settings.items():
        assert getattr(policy, name) == value
    assert repr(policy).startswith('<RetryPolicy attempts=')


def test_infinite_budgets_never_give_up_on_time():
    clock = Clock()
    policy = RetryPolicy(clock=clock, attempts=2, time_budget=INF,
                         disconnect_time_budget=INF)
    assert 'time_budget=unlimited' in repr(policy)
    attempts = policy.begin()
    clock.now = 1e300
    for _ in range(100):
        attempts.backoff(ClientDisconnected())  # until the server is back
    attempts.backoff(ConflictError())
    with pytest.raises(RetriesExhausted, match='attempts used up'):
        attempts.backoff(ConflictError())  # attempts still count
    assert math.isinf(policy.time_budget)
