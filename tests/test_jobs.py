"""perform(): jobs after commit, in the caller's site and as its user."""
import threading

import pytest
import transaction
from persistent import Persistent
from persistent.mapping import PersistentMapping
from zope.component import hooks
from zope.security.management import queryInteraction

from cipher.background import jobs
from cipher.background.context import Participation
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.demo import Document
from cipher.background.demo import Principal
from cipher.background.errors import ConfigurationError
from cipher.background.errors import WaitTimeout
from cipher.background.jobs import get_status
from cipher.background.jobs import perform
from cipher.background.jobs import submit
from cipher.background.jobs import wait
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class Counter(Persistent):
    def __init__(self):
        self.value = 0


@pytest.fixture
def request_on(any_db):
    """An open 'request': a connection, the site set, 'editor' logged in."""
    add_site(any_db)
    conn = any_db.open()
    site = conn.root()['site']
    with ZopeSite(site):
        with ZopeInteraction(Participation(Principal('editor'))):
            yield conn, site
    transaction.abort()
    conn.close()


def describe_context(suffix=''):
    """A job: what the job sees of its footing."""
    site = hooks.getSite()
    site['doc'].title = 'seen' + suffix
    return dict(
        site=site.__name__,
        principals=[p.principal.id
                    for p in queryInteraction().participations],
        note=transaction.get().description,
        thread=threading.current_thread().name)


def test_job_runs_after_commit_in_the_callers_site_as_its_user(
        request_on, any_db):
    conn, site = request_on
    site['doc'].state = 'WRITTEN BY THE REQUEST'
    job_id = perform(describe_context, '!')
    assert get_status(job_id).state == 'pending-commit'
    transaction.commit()
    status = wait(job_id, TIMEOUT)
    assert status.state == 'succeeded', status.traceback
    assert status.result['site'] == 'site'
    assert status.result['principals'] == ['editor']
    assert status.result['note'] == (
        'job test_jobs.describe_context (%s)' % job_id)
    assert status.result['thread'].startswith('cipher.background.job')
    assert status.attempts == 1
    assert status.created <= status.started <= status.finished
    assert read(any_db, lambda r: (r['site']['doc'].title,
                                   r['site']['doc'].state)) == (
        'seen!', 'WRITTEN BY THE REQUEST')


def test_job_is_dropped_when_the_caller_aborts(request_on, any_db):
    job_id = perform(describe_context)
    transaction.abort()
    assert get_status(job_id).state == 'dropped'
    transaction.commit()  # a later commit does not revive it
    assert wait(job_id, TIMEOUT).state == 'dropped'
    assert read(any_db, lambda r: r['site']['doc'].title) == 'Annual report'


def test_after_commit_false_dispatches_at_once(request_on):
    job_id = submit(describe_context, after_commit=False)
    assert wait(job_id, TIMEOUT).state == 'succeeded'  # no commit needed


def test_perform_reserves_no_keyword_names(request_on):
    def echo(**kwargs):
        return kwargs
    job_id = perform(echo, db=1, site=2, user=3, after_commit=4)
    transaction.commit()
    assert wait(job_id, TIMEOUT).result == dict(
        db=1, site=2, user=3, after_commit=4)


def test_explicit_db_site_and_user_for_scripts(any_db):
    site_oid = add_site(any_db)
    conn = any_db.open()
    site = conn.root()['site']
    job_id = submit(describe_context, db=any_db, site=site, user='admin',
                    after_commit=False)
    conn.close()
    status = wait(job_id, TIMEOUT)
    assert status.result['principals'] == ['admin']
    assert site._p_oid == site_oid


def test_persistent_arguments_are_loaded_in_the_jobs_connection(
        request_on, any_db):
    conn, site = request_on
    fresh = Document('added by the request')
    site['fresh'] = fresh  # gets its OID only at commit

    def publish(document, other=None):
        assert document._p_jar is not conn  # never the caller's object
        document.state = 'PUBLISHED'
        other.state = 'PUBLISHED TOO'
        return document

    job_id = perform(publish, fresh, other=site['doc'])
    transaction.commit()
    status = wait(job_id, TIMEOUT)
    assert status.state == 'succeeded', status.traceback
    assert status.result == fresh._p_oid  # persistent results by OID
    assert read(any_db, lambda r: (r['site']['fresh'].state,
                                   r['site']['doc'].state)) == (
        'PUBLISHED', 'PUBLISHED TOO')


def test_a_persistent_argument_never_stored_fails_clearly(request_on):
    job_id = perform(describe_context, Document('never added'))
    transaction.commit()
    status = wait(job_id, TIMEOUT)
    assert status.state == 'failed'
    assert 'never reached the database' in status.error
    assert status.error.startswith('ObjectNotStored')


def test_an_exception_aborts_all_writes_and_is_recorded(request_on, any_db):
    def half_done():
        hooks.getSite()['doc'].state = 'HALF'
        raise ValueError('the second half failed')

    job_id = perform(half_done)
    transaction.commit()
    status = wait(job_id, TIMEOUT)
    assert status.state == 'failed'
    assert status.error == 'ValueError: the second half failed'
    assert 'in half_done' in status.traceback
    assert 'ValueError: the second half failed' in status.output  # logged
    assert read(any_db, lambda r: r['site']['doc'].state) == 'DRAFT'


def test_conflicting_jobs_are_retried_and_lose_nothing(file_db):
    add_site(file_db)
    conn = file_db.open()
    counter = conn.root()['counter'] = Counter()
    transaction.commit()

    def increment(counter):
        counter.value += 1

    ids = [submit(increment, (counter,), after_commit=False)
           for _ in range(60)]
    conn.close()
    statuses = [wait(job_id, TIMEOUT) for job_id in ids]
    assert [s.state for s in statuses] == ['succeeded'] * 60
    assert read(file_db, lambda r: r['counter'].value) == 60


def test_a_job_against_zeo(zeo_db):
    add_site(zeo_db)

    def publish():
        hooks.getSite()['doc'].state = 'PUBLISHED'
        return 'done'

    conn = zeo_db.open()
    job_id = submit(publish, site=conn.root()['site'], user='editor',
                    after_commit=False)
    conn.close()
    assert wait(job_id, TIMEOUT).result == 'done'
    assert read(zeo_db, lambda r: r['site']['doc'].state) == 'PUBLISHED'


@pytest.mark.parametrize('fn, error, message', [
    (None, TypeError, 'expected a callable'),
    ('module.function', TypeError, 'expected a callable'),
])
def test_non_callables_are_type_errors_at_the_call(request_on, fn, error,
                                                   message):
    with pytest.raises(error, match=message):
        perform(fn)


def test_methods_of_persistent_objects_are_refused(request_on):
    conn, site = request_on
    with pytest.raises(TypeError, match='pass a plain function'):
        perform(site['doc']._p_activate)


def test_no_database_to_be_found_is_a_clear_error():
    with pytest.raises(ConfigurationError, match='pass db='):
        perform(print)


def test_objects_of_another_database_are_refused(request_on, mapping_db):
    other = mapping_db.open()
    other.root()['x'] = PersistentMapping()
    transaction.commit()
    with pytest.raises(ConfigurationError, match='different databases'):
        perform(print, other.root()['x'])
    other.close()


def test_unknown_ids_answer_unknown_and_wait_times_out(request_on):
    assert get_status('no-such-job').state == 'unknown'
    assert wait('no-such-job', 0).state == 'unknown'
    assert jobs.get_progress('no-such-job') is None
    assert jobs.cancel('no-such-job') is False
    job_id = perform(describe_context)  # pending until a commit
    with pytest.raises(WaitTimeout, match='still pending-commit'):
        wait(job_id, 0.01)
    transaction.abort()
