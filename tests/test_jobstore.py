"""The job store: its state machine, limits, waiting and validation."""
import math
import threading

import pytest
from zope.interface.verify import verifyObject

from cipher.background import jobstore
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import WaitTimeout
from cipher.background.interfaces import IJobStatus
from cipher.background.interfaces import IJobStore
from cipher.background.jobstore import MemoryJobStore
from cipher.background.jobstore import TRANSITIONS
from helpers import TIMEOUT

#: The documented table, spelled out so a change to it shows here.
EXPECTED_TRANSITIONS = {
    'pending-commit': {'queued', 'dropped', 'cancelled'},
    'queued': {'running', 'cancelled', 'failed', 'interrupted'},
    'running': {'retrying', 'succeeded', 'failed', 'cancelled',
                'interrupted', 'outcome-unknown'},
    'retrying': {'running', 'failed', 'cancelled', 'interrupted'},
    'succeeded': set(), 'failed': set(), 'cancelled': set(),
    'dropped': set(), 'interrupted': set(), 'outcome-unknown': set(),
}
FINAL = {'succeeded', 'failed', 'cancelled', 'dropped', 'interrupted',
         'outcome-unknown'}
ALLOWED = [(old, new) for old in sorted(EXPECTED_TRANSITIONS)
           for new in sorted(EXPECTED_TRANSITIONS[old])]
REFUSED = [(old, new) for old in sorted(EXPECTED_TRANSITIONS)
           for new in sorted(EXPECTED_TRANSITIONS)
           if new not in EXPECTED_TRANSITIONS[old]]

#: How a job added as 'pending-commit' reaches each state.
PATHS = {
    'pending-commit': [],
    'queued': ['queued'],
    'running': ['queued', 'running'],
    'retrying': ['queued', 'running', 'retrying'],
    'succeeded': ['queued', 'running', 'succeeded'],
    'failed': ['queued', 'failed'],
    'cancelled': ['cancelled'],
    'dropped': ['dropped'],
    'interrupted': ['queued', 'interrupted'],
    'outcome-unknown': ['queued', 'running', 'outcome-unknown'],
}


def job_in(store, state, job_id='job'):
    store.add(job_id, 'mod.fn', 'pending-commit')
    for step in PATHS[state]:
        assert store.transition(job_id, step)
    assert store.get(job_id).state == state
    return job_id


def finish(store, job_id):
    assert store.transition(job_id, 'running')
    assert store.transition(job_id, 'succeeded', result=job_id)


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_store_and_status_provide_their_interfaces():
    store = MemoryJobStore()
    assert verifyObject(IJobStore, store)
    job_in(store, 'running')
    assert verifyObject(IJobStatus, store.get('job'))
    assert verifyObject(IJobStatus, store.get('nobody'))


def test_transition_table_is_the_documented_one():
    assert {state: set(targets) for state, targets in TRANSITIONS.items()} \
        == EXPECTED_TRANSITIONS
    assert all(isinstance(targets, frozenset)
               for targets in TRANSITIONS.values())
    assert jobstore.FINAL_STATES == FINAL
    assert (jobstore.INTERRUPTED, jobstore.OUTCOME_UNKNOWN,
            jobstore.UNKNOWN) == ('interrupted', 'outcome-unknown',
                                  'unknown')


@pytest.mark.parametrize('old, new', ALLOWED)
def test_allowed_transitions_set_the_state_and_the_fields(old, new):
    store = MemoryJobStore()
    job_in(store, old)
    assert store.transition('job', new, attempts=3, error='E: x') is True
    status = store.get('job')
    assert (status.state, status.attempts, status.error) == (new, 3, 'E: x')
    assert status.done == (new in FINAL)
    assert (status.finished is not None) == (new in FINAL)
    if status.finished is not None:
        assert status.finished.utcoffset().total_seconds() == 0


@pytest.mark.parametrize('old, new', REFUSED)
def test_refused_transitions_change_nothing(old, new):
    store = MemoryJobStore()
    job_in(store, old)
    before = store.get('job')
    assert store.transition('job', new, attempts=7) is False
    assert store.get('job') == before


def test_a_cancel_while_queued_makes_the_runners_start_a_no_op():
    store = MemoryJobStore()
    job_in(store, 'queued')
    assert store.transition('job', 'cancelled')
    assert store.transition('job', 'running', attempts=1) is False
    assert store.get('job').state == 'cancelled'


def test_transitions_of_unknown_ids_are_refused():
    store = MemoryJobStore()
    assert store.transition('nobody', 'queued') is False
    assert store.get('nobody').state == 'unknown'
    assert len(store) == 0


@pytest.mark.parametrize('state', ['done', 'unknown', 'Running', None, 5])
def test_unknown_state_names_are_configuration_errors(state):
    store = MemoryJobStore()
    job_in(store, 'running')
    with pytest.raises(ConfigurationError, match='not a state'):
        store.transition('job', state)
    with pytest.raises(ConfigurationError, match='use one of'):
        store.update('job', expect={state}, progress=1)
    assert store.get('job').state == 'running'


@pytest.mark.parametrize('state', sorted(FINAL) + ['unknown', 'later'])
def test_jobs_are_added_in_a_state_that_is_not_final(state):
    store = MemoryJobStore()
    with pytest.raises(ConfigurationError, match='can be added in'):
        store.add('job', 'mod.fn', state)
    assert len(store) == 0


def test_a_final_state_wakes_a_waiter_in_another_thread():
    # The waiter calls the clock under the store's lock just before it
    # sleeps in wait(): once the clock was called from its thread, the
    # transition (which needs that lock) happens while it sleeps.
    waiting = threading.Event()

    def clock():
        if threading.current_thread() is not threading.main_thread():
            waiting.set()
        return 0.0

    store = MemoryJobStore(clock=clock)
    job_in(store, 'succeeded', 'older')   # makes wait() look at the clock
    job_in(store, 'running')
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(store.wait('job', TIMEOUT)))
    waiter.start()
    assert waiting.wait(TIMEOUT)
    assert store.transition('job', 'failed', error='ValueError: no')
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()
    [status] = answers
    assert (status.state, status.error) == ('failed', 'ValueError: no')


def test_wait_answers_finished_and_unknown_jobs_at_once():
    store = MemoryJobStore()
    job_in(store, 'dropped')
    assert store.wait('job', 0).state == 'dropped'
    assert store.wait('nobody').state == 'unknown'


def test_wait_times_out_on_an_unfinished_job():
    store = MemoryJobStore()
    job_in(store, 'retrying')
    with pytest.raises(WaitTimeout, match='still retrying after 0s'):
        store.wait('job', timeout=0)


def test_count_limit_holds_after_each_finish_without_adds():
    store = MemoryJobStore(keep_count=3)
    ids = ['job%d' % n for n in range(50)]
    for job_id in ids:
        store.add(job_id, 'mod.fn', 'queued')
    for done, job_id in enumerate(ids, 1):
        finish(store, job_id)
        finished = [j for j in ids[:done]
                    if store.get(j).state == 'succeeded']
        assert finished == ids[max(0, done - 3):done]
        assert len(store) == len(ids) - done + len(finished)
    assert len(store) == 3


def test_age_limit_holds_for_get_len_and_wait_without_adds():
    clock = FakeClock()
    store = MemoryJobStore(keep_seconds=60, clock=clock)
    store.add('old', 'mod.fn', 'queued')
    store.add('young', 'mod.fn', 'queued')
    store.add('busy', 'mod.fn', 'queued')
    finish(store, 'old')
    clock.now += 30
    finish(store, 'young')
    clock.now += 30
    assert len(store) == 3   # 'old' is exactly 60 seconds old
    clock.now += 1
    assert store.get('old').state == 'unknown'
    assert len(store) == 2
    assert store.get('young').state == 'succeeded'
    clock.now += 30
    assert store.wait('young', 0).state == 'unknown'
    assert len(store) == 1
    clock.now += 10 ** 6      # unfinished jobs are never forgotten
    assert store.get('busy').state == 'queued'


def test_keep_count_zero_forgets_a_job_as_it_finishes():
    store = MemoryJobStore(keep_count=0)
    job_in(store, 'running')
    assert store.transition('job', 'succeeded')
    assert store.wait('job', 0).state == 'unknown'
    assert len(store) == 0


def test_prune_applies_the_limits_now():
    clock = FakeClock()
    store = MemoryJobStore(keep_seconds=5, clock=clock)
    job_in(store, 'cancelled')
    clock.now += 6
    store.prune()
    assert len(store) == 0


def test_the_principal_is_set_at_add_and_kept():
    store = MemoryJobStore()
    store.add('job', 'mod.fn', 'queued', principal='editor')
    store.add('system', 'mod.fn', 'queued')
    assert store.transition('job', 'running')
    assert store.update('job', progress=5)
    assert store.transition('job', 'succeeded')
    assert store.get('job').principal == 'editor'
    assert store.get('system').principal is None
    with pytest.raises(ArgumentTypeError, match='principal'):
        store.update('system', principal='admin')
    with pytest.raises(ArgumentTypeError, match='principal id'):
        store.add('other', 'mod.fn', 'queued', principal=42)


def test_duplicate_ids_are_configuration_errors():
    store = MemoryJobStore()
    store.add('job', 'mod.fn', 'queued')
    with pytest.raises(ConfigurationError, match="'job' is in use already"):
        store.add('job', 'mod.other', 'pending-commit')
    assert store.get('job').name == 'mod.fn'


def test_update_changes_other_fields_guarded_by_expect():
    store = MemoryJobStore()
    job_in(store, 'running')
    assert store.update('job', expect={'queued'}, progress=1) is False
    assert store.update('job', expect=('running', 'retrying'), progress=2,
                        progress_data='half', cancel_requested=True)
    status = store.get('job')
    assert (status.progress, status.progress_data,
            status.cancel_requested) == (2, 'half', True)
    assert store.update('nobody', progress=3) is False
    assert store.transition('job', 'cancelled')
    assert store.update('job', progress=4) is False  # finished stays
    assert store.get('job').progress == 2


def test_update_refuses_the_state():
    store = MemoryJobStore()
    job_in(store, 'queued')
    with pytest.raises(ArgumentTypeError,
                       match=r'use transition\(job_id, state'):
        store.update('job', expect={'queued'}, state='running')
    with pytest.raises(TypeError):   # what older callers catch
        store.update('job', state='running')
    assert store.get('job').state == 'queued'


@pytest.mark.parametrize('field, words', [
    ('colour', 'no such field'),
    ('output', 'no such field'),
    ('finished', 'kept as set by add'),
    ('created', 'kept as set by add'),
    ('id', 'kept as set by add'),
])
def test_update_and_transition_refuse_fields_they_do_not_set(field, words):
    store = MemoryJobStore()
    job_in(store, 'queued')
    for call in (lambda: store.update('job', **{field: 1}),
                 lambda: store.transition('job', 'running', **{field: 1})):
        with pytest.raises(ArgumentTypeError, match=words) as info:
            call()
        assert 'the fields it sets are attempts, cancel_requested' in str(
            info.value)
    assert store.get('job').state == 'queued'


@pytest.mark.parametrize('expect', ['queued', 5])
def test_expect_must_be_a_collection_of_states(expect):
    store = MemoryJobStore()
    job_in(store, 'queued')
    with pytest.raises(ArgumentTypeError, match='collection of states'):
        store.update('job', expect=expect, progress=1)


@pytest.mark.parametrize('name, value, error', [
    ('keep_seconds', math.inf, ConfigurationError),
    ('keep_seconds', math.nan, ConfigurationError),
    ('keep_seconds', -1, ConfigurationError),
    ('keep_seconds', True, ArgumentTypeError),
    ('keep_seconds', '60', ArgumentTypeError),
    ('keep_seconds', None, ArgumentTypeError),
    ('keep_count', math.inf, ArgumentTypeError),
    ('keep_count', 2.5, ArgumentTypeError),
    ('keep_count', -1, ConfigurationError),
    ('keep_count', False, ArgumentTypeError),
    ('keep_count', '10', ArgumentTypeError),
    ('output_limit', math.inf, ArgumentTypeError),
    ('output_limit', math.nan, ArgumentTypeError),
    ('output_limit', -5, ConfigurationError),
    ('output_limit', True, ArgumentTypeError),
    ('output_limit', '1k', ArgumentTypeError),
])
def test_bad_limits_are_refused_at_construction(name, value, error):
    with pytest.raises(error, match='MemoryJobStore %s must be a' % name):
        MemoryJobStore(**{name: value})
    assert issubclass(error, ConfigurationError)


def test_good_limits_and_a_clock_are_taken():
    store = MemoryJobStore(keep_seconds=0.5, keep_count=0, output_limit=0,
                           clock=FakeClock())
    assert (store.keep_seconds, store.keep_count, store.output_limit) == (
        0.5, 0, 0)
    with pytest.raises(ArgumentTypeError, match='clock must be a callable'):
        MemoryJobStore(clock=5)


@pytest.mark.parametrize('timeout, error', [
    ('5', ArgumentTypeError),
    (True, ArgumentTypeError),
    ([1], ArgumentTypeError),
    (-1, ConfigurationError),
    (math.inf, ConfigurationError),
    (math.nan, ConfigurationError),
])
def test_bad_wait_timeouts_are_refused(timeout, error):
    store = MemoryJobStore()
    job_in(store, 'running')
    with pytest.raises(error, match='timeout must be a finite number >= 0.*'
                                    'pass None'):
        store.wait('job', timeout=timeout)


def test_output_keeps_only_the_last_characters():
    store = MemoryJobStore(output_limit=10)
    job_in(store, 'running')
    for n in range(100):
        store.write('job', 'line %02d\n' % n)
    store.write('job', '')
    assert store.get('job').output == 'line 98\nline 99\n'[-10:]
    store.write('job', 'x' * 25)
    assert store.get('job').output == 'x' * 10
    store.write('nobody', 'ignored')
    with pytest.raises(ArgumentTypeError, match='decode bytes first'):
        store.write('job', b'bytes')


def test_output_limit_zero_keeps_nothing():
    store = MemoryJobStore(output_limit=0)
    job_in(store, 'running')
    store.write('job', 'hello')
    assert store.get('job').output == ''


def test_done_means_final_or_unknown():
    store = MemoryJobStore()
    for state in PATHS:
        job_in(store, state, state)
        assert store.get(state).done == (state in FINAL)
    assert store.get('nobody').done


def test_many_threads_adding_running_and_waiting_keep_the_store_consistent():
    # Four threads submit and run 300 jobs each while a fifth waits for
    # every one of them; finished jobs beyond keep_count are forgotten as
    # they go.  Every wait ends (with the job's final state, or 'unknown'
    # once it was forgotten) and the limit holds at the end.
    store = MemoryJobStore(keep_count=25)
    ids = [['t%d-%d' % (thread, n) for n in range(300)] for thread in range(4)]
    every_id = [job_id for batch in ids for job_id in batch]
    added = {job_id: threading.Event() for job_id in every_id}
    answers = {}

    def run(batch):
        for job_id in batch:
            store.add(job_id, 'mod.fn', 'queued', principal='bob')
            added[job_id].set()
            assert store.transition(job_id, 'running')
            store.write(job_id, 'line\n')
            assert store.transition(job_id, 'succeeded', result=job_id)

    def wait_for_all():
        for job_id in every_id:
            assert added[job_id].wait(TIMEOUT)
            answers[job_id] = store.wait(job_id, TIMEOUT)

    threads = [threading.Thread(target=run, args=(batch,)) for batch in ids]
    threads.append(threading.Thread(target=wait_for_all))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert len(answers) == len(every_id)
    for job_id, status in answers.items():
        assert status.state in ('succeeded', 'unknown')
        if status.state == 'succeeded':
            assert (status.result, status.output) == (job_id, 'line\n')
    assert len(store) == 25
    assert [store.get(job_id).state for batch in ids
            for job_id in batch[-1:]].count('succeeded') >= 1


def test_a_waiter_waits_through_other_jobs_ending():
    store = MemoryJobStore()
    job_in(store, 'running', 'mine')
    job_in(store, 'running', 'other')
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(store.wait('mine', TIMEOUT)))
    waiter.start()
    assert store.transition('other', 'succeeded')
    assert store.get('other').done and not store.get('mine').done
    assert store.transition('mine', 'failed', error='E: no')
    waiter.join(TIMEOUT)
    assert [status.state for status in answers] == ['failed']
