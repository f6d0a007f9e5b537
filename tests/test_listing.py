"""Listing jobs: the in-memory job store and a durable queue answer the
same questions (IJobListing), so a page need not care where a job
lives."""
import pytest
import transaction
from zope.interface.verify import verifyObject

from cipher.background import ArgumentTypeError
from cipher.background import ConfigurationError
from cipher.background import SYSTEM
from cipher.background.durable import DurableJobs
from cipher.background.durable import enqueue_call
from cipher.background.interfaces import IJobListing
from cipher.background.jobstore import MemoryJobStore
from cipher.background.queuerunner import QueueRunner
import durable_jobs
from helpers import TIMEOUT


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def memory_jobs():
    """A store holding: a (bob, queued), b (bob, running), c (ann,
    succeeded), d (ann, failed), e (no principal, queued), created in
    that order."""
    store = MemoryJobStore()
    for job_id, name, principal in [('a', 'mod.index', 'bob'),
                                    ('b', 'mod.index', 'bob'),
                                    ('c', 'mod.report', 'ann'),
                                    ('d', 'mod.report', 'ann'),
                                    ('e', 'mod.mail', None)]:
        store.add(job_id, name, 'queued', principal)
    store.transition('b', 'running')
    store.transition('c', 'running')
    store.transition('c', 'succeeded', result=1)
    store.transition('d', 'failed', error='ValueError: no')
    return store


def test_the_memory_store_lists_newest_first():
    store = memory_jobs()
    verifyObject(IJobListing, store)
    assert [s.id for s in store.list()] == ['e', 'd', 'c', 'b', 'a']
    assert [s.id for s in store.list(limit=2)] == ['e', 'd']
    assert [s.id for s in store.list(state='queued')] == ['e', 'a']
    assert [s.id for s in store.list(state=('failed', 'running'))] == [
        'd', 'b']
    assert [s.id for s in store.list(principal='ann')] == ['d', 'c']
    assert [s.id for s in store.list(name='index')] == ['b', 'a']
    assert [s.id for s in store.list(name='report', state='failed')] == [
        'd']
    assert store.list(principal='nobody') == []
    assert store.counts() == {'queued': 2, 'running': 1, 'succeeded': 1,
                              'failed': 1}


def test_the_memory_store_lists_what_it_still_keeps():
    clock = _Clock()
    store = MemoryJobStore(keep_seconds=10, clock=clock)
    store.add('old', 'mod.f', 'queued')
    store.transition('old', 'failed')
    clock.now = 11
    store.add('new', 'mod.f', 'queued')
    assert [s.id for s in store.list()] == ['new']
    assert store.counts() == {'queued': 1}


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(state='sleeping'), ConfigurationError, "no job state 'sleeping'"),
    (dict(state=3), ArgumentTypeError, 'state must be'),
    (dict(principal=3), ArgumentTypeError, 'principal must be'),
    (dict(name=b'x'), ArgumentTypeError, 'name must be'),
    (dict(limit=0), ArgumentTypeError, 'limit must be'),
    (dict(limit=True), ArgumentTypeError, 'limit must be'),
    (dict(limit=2.5), ArgumentTypeError, 'limit must be'),
])
def test_bad_filters_are_refused_by_both(file_db, kwargs, error, message):
    for listing in (MemoryJobStore(), DurableJobs(file_db)):
        with pytest.raises(error, match=message):
            listing.list(**kwargs)


@pytest.fixture
def site(team_site):
    return team_site


def test_a_durable_queue_lists_the_same_way(file_db, site):
    def job(fn, *args, user):
        job_id = enqueue_call(fn, args, site=site, user=user, attempts=1)
        transaction.commit()
        return job_id
    ids = {}
    ids['c'] = job(durable_jobs.count, 'c', user='ann')
    ids['d'] = job(durable_jobs.fail, 'no', user='ann')
    assert QueueRunner(file_db).run_pending() == 2  # c succeeds, d fails
    durable_jobs.started.clear()
    durable_jobs.release.clear()
    ids['b'] = job(durable_jobs.held, 'b', user='bob')
    runner = QueueRunner(file_db, threads=1).start()
    try:
        assert durable_jobs.started.wait(TIMEOUT)  # b runs
        ids['a'] = job(durable_jobs.count, 'a', user='bob')
        ids['e'] = job(durable_jobs.noop, user=SYSTEM)
        listing = DurableJobs(file_db)
        verifyObject(IJobListing, listing)
        names = {job_id: key for key, job_id in ids.items()}

        def keys(statuses):
            return [names[status.id] for status in statuses]
        runner.request_stop()  # a and e stay queued
        assert keys(listing.list()) == ['e', 'a', 'b', 'd', 'c']
        assert keys(listing.list(limit=2)) == ['e', 'a']
        assert keys(listing.list(state='queued')) == ['e', 'a']
        assert keys(listing.list(state=('failed', 'running'))) == ['b', 'd']
        assert keys(listing.list(principal='ann')) == ['d', 'c']
        assert keys(listing.list(name='count')) == ['a', 'c']
        assert listing.list(principal='nobody') == []
        assert listing.counts() == {'queued': 2, 'running': 1,
                                    'succeeded': 1, 'failed': 1}
        failed = listing.get(ids['d'])
        assert (failed.state, failed.principal, failed.error) == (
            'failed', 'ann', 'RuntimeError: no')
        assert listing.get('nothing@here').state == 'unknown'
    finally:
        durable_jobs.release.set()
        assert runner.stop(TIMEOUT)


def test_another_queue_is_listed_apart(file_db, site):
    enqueue_call(durable_jobs.noop, site=site, user='bob', queue='mail')
    transaction.commit()
    assert DurableJobs(file_db).list() == []
    assert DurableJobs(file_db).counts() == {}
    assert [s.name for s in DurableJobs(file_db, 'mail').list()] == [
        'durable_jobs.noop']
