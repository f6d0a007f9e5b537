"""Inside and around a running job: progress, cancel, output, clean pool
threads, waiting for data, and the immediate mode for tests."""
import logging
import threading

import pytest
import transaction
from zope.component import hooks
from zope.security.management import queryInteraction

from cipher.background import jobs
from cipher.background.context import Participation
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.demo import Document
from cipher.background.demo import Principal
from cipher.background.errors import NotInJob
from cipher.background.jobs import cancel
from cipher.background.jobs import current_job
from cipher.background.jobs import get_progress
from cipher.background.jobs import get_status
from cipher.background.jobs import set_progress
from cipher.background.jobs import submit
from cipher.background.jobs import wait
from cipher.background.jobstore import MemoryJobStore
from cipher.background.output import job_output
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scheduler import ImmediateScheduler
from cipher.background.testing import immediate
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


@pytest.fixture
def site_db(mapping_db):
    add_site(mapping_db)
    return mapping_db


@pytest.fixture
def one_thread():
    """A pool of one thread: jobs run one after the other, on one thread."""
    scheduler = BackgroundScheduler(max_workers=1)
    yield scheduler
    scheduler.shutdown()


def run(fn, db, *args, **options):
    conn = db.open()
    options.setdefault('user', 'editor')
    try:
        return submit(fn, args, site=conn.root()['site'], after_commit=False,
                      **options)
    finally:
        conn.close()


class Gate:
    """Lets a test and a job take turns."""

    def __init__(self):
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def __call__(self):
        self.reached.set()
        assert self.go_on.wait(TIMEOUT)


def test_progress_is_readable_while_running_and_tg_style(site_db,
                                                         one_thread):
    blocker, gate = Gate(), Gate()

    def work():
        set_progress(40, {'step': 'resizing'})
        gate()
        return 'ok'

    first = run(lambda: blocker(), site_db, scheduler=one_thread)
    assert blocker.reached.wait(TIMEOUT)
    job_id = run(work, site_db, scheduler=one_thread)
    assert get_status(job_id).state == 'queued'
    assert get_progress(job_id) == (-1, None)  # queued behind the first
    blocker.go_on.set()
    assert gate.reached.wait(TIMEOUT)
    assert get_progress(job_id) == (40, {'step': 'resizing'})
    assert get_status(job_id).state == 'running'
    gate.go_on.set()
    assert wait(job_id, TIMEOUT).progress == 40
    assert get_progress(job_id) is None  # finished
    assert wait(first, TIMEOUT).state == 'succeeded'


def test_current_job_inside_and_outside(site_db):
    def who_am_i():
        return current_job().id

    job_id = run(who_am_i, site_db)
    assert wait(job_id, TIMEOUT).result == job_id
    assert current_job() is None
    with pytest.raises(NotInJob, match='only inside a running job'):
        set_progress(1)


def test_cancel_a_queued_job_and_it_never_starts(site_db, one_thread):
    blocker = Gate()
    ran = []
    first = run(lambda: blocker(), site_db, scheduler=one_thread)
    assert blocker.reached.wait(TIMEOUT)
    job_id = run(lambda: ran.append(1), site_db, scheduler=one_thread)
    assert cancel(job_id) is True
    blocker.go_on.set()
    wait(first, TIMEOUT)
    one_thread.shutdown(wait=True)  # the queued task has been through
    assert ran == []
    assert get_status(job_id).state == 'cancelled'


def test_cancel_a_running_job_stops_it_and_aborts_its_writes(site_db):
    gate = Gate()

    def long_job():
        hooks.getSite()['doc'].state = 'HALF'
        set_progress(1)
        gate()
        set_progress(2)  # raises JobCancelled
        hooks.getSite()['doc'].state = 'DONE'

    job_id = run(long_job, site_db)
    assert gate.reached.wait(TIMEOUT)
    assert cancel(job_id) is True
    assert get_status(job_id).cancel_requested
    gate.go_on.set()
    status = wait(job_id, TIMEOUT)
    assert status.state == 'cancelled'
    assert status.progress == 2
    assert read(site_db, lambda r: r['site']['doc'].state) == 'DRAFT'
    assert cancel(job_id) is False  # finished


def test_check_cancelled_and_cancel_before_commit(site_db):
    conn = site_db.open()
    with ZopeSite(conn.root()['site']):
        job_id = jobs.submit(print, ('never printed',), user='editor')
    assert cancel(job_id) is True
    transaction.commit()
    conn.close()
    assert wait(job_id, TIMEOUT).state == 'cancelled'
    assert wait(job_id, TIMEOUT).output == ''


def test_output_is_captured_per_job_and_logging_still_works(site_db,
                                                            caplog):
    gate = Gate()
    logger = logging.getLogger('myapp')

    def chatty(n):
        print('job %d starting' % n, file=job_output())
        logger.warning('job %d warns', n)
        if n == 1:
            gate()
        print('job %d done' % n, file=job_output())

    first = run(chatty, site_db, 1)
    assert gate.reached.wait(TIMEOUT)
    assert 'job 1 starting' in get_status(first).output  # while running
    print('the test thread prints too')
    second = run(chatty, site_db, 2)
    assert wait(second, TIMEOUT).state == 'succeeded'
    gate.go_on.set()
    output_1 = wait(first, TIMEOUT).output
    output_2 = get_status(second).output
    assert output_1 == ('job 1 starting\nWARNING myapp job 1 warns\n'
                        'job 1 done\n')
    assert output_2 == ('job 2 starting\nWARNING myapp job 2 warns\n'
                        'job 2 done\n')
    assert 'the test thread' not in output_1 + output_2
    # The records still reach the normal log handlers.
    assert [r.getMessage() for r in caplog.records
            if r.name == 'myapp'].count('job 1 warns') == 1


def test_output_buffer_keeps_only_the_last_part(site_db):
    store = MemoryJobStore(output_limit=100)
    previous = jobs.set_job_store(store)
    try:
        def loud():
            for line in range(1000):
                print('line %04d' % line, file=job_output())
        job_id = run(loud, site_db)
        output = wait(job_id, TIMEOUT).output
    finally:
        jobs.set_job_store(previous)
    assert len(output) == 100
    assert output.endswith('line 0999\n')


def test_pool_threads_carry_nothing_from_one_job_into_the_next(
        mapping_db, one_thread):
    add_site(mapping_db, name='one', users=('alice',))
    add_site(mapping_db, name='two', users=('bob',))

    def footing():
        return dict(
            site=hooks.getSite().__name__,
            principals=[p.principal.id
                        for p in queryInteraction().participations],
            thread=threading.get_ident(),
            job=current_job().id)

    conn = mapping_db.open()
    ids = [submit(footing, site=conn.root()[name], user=user,
                  after_commit=False, scheduler=one_thread)
           for name, user in [('one', 'alice'), ('two', 'bob')]]
    conn.close()
    first, second = [wait(job_id, TIMEOUT).result for job_id in ids]
    assert first['thread'] == second['thread']  # the same pool thread
    assert (first['site'], first['principals']) == ('one', ['alice'])
    assert (second['site'], second['principals']) == ('two', ['bob'])
    assert second['job'] == ids[1]

    def leftovers():
        return (hooks.getSite(), queryInteraction(), current_job(),
                transaction.get()._resources)
    task_id = one_thread.start(leftovers)
    assert one_thread.future[task_id].result(TIMEOUT) == (None, None, None,
                                                          [])
    assert all(info['opened'] is None
               for info in mapping_db.connectionDebugInfo())


def test_wait_for_sees_what_another_transaction_commits_later(site_db):
    looked = threading.Event()

    def find_report(connection):
        looked.set()
        return connection.root()['site'].get('late')

    def publish_late():
        document = jobs.wait_for(find_report, tries=5000, interval=0.01)
        document.state = 'PUBLISHED'
        return document.title

    job_id = run(publish_late, site_db)
    assert looked.wait(TIMEOUT)
    conn = site_db.open()
    conn.root()['site']['late'] = Document('Late report')
    transaction.commit()
    conn.close()
    status = wait(job_id, TIMEOUT)
    assert status.result == 'Late report', status.traceback
    assert read(site_db, lambda r: r['site']['late'].state) == 'PUBLISHED'


def test_wait_for_gives_up_with_a_clear_error(site_db):
    def never():
        return jobs.wait_for(b'\0' * 7 + b'\x55', tries=3, interval=0)

    status = wait(run(never, site_db), TIMEOUT)
    assert status.state == 'failed'
    assert 'was not found after 3 tries' in status.error


def test_immediate_mode_runs_the_job_at_commit_in_a_thread_of_its_own(
        site_db):
    def publish(document):
        document.state = 'PUBLISHED'
        return (threading.get_ident(),
                [p.principal.id for p in queryInteraction().participations])

    conn = site_db.open()
    site = conn.root()['site']
    with immediate(), ZopeSite(site):
        with ZopeInteraction(Participation(Principal('editor'))):
            job_id = jobs.perform(publish, site['doc'])
            assert get_status(job_id).state == 'pending-commit'
            transaction.commit()
            status = get_status(job_id)  # no waiting needed
            # The caller's footing is back.
            assert hooks.getSite() is site
            assert [p.principal.id for p in
                    queryInteraction().participations] == ['editor']
    assert status.state == 'succeeded', status.traceback
    job_thread, principals = status.result
    assert job_thread != threading.get_ident()  # a clean thread
    assert principals == ['editor']
    conn.sync()
    assert site['doc'].state == 'PUBLISHED'
    conn.close()


def test_a_job_run_at_once_inside_a_pool_job_leaves_it_intact(site_db,
                                                              one_thread):
    """A job that runs another one synchronously in the same pool thread
    (ImmediateScheduler) gets back its site, interaction and pending
    writes."""
    def inner():   # writes another object than outer does
        hooks.getSite()._p_jar.root()['inner'] = 'done'

    def outer():
        site = hooks.getSite()
        site['doc'].state = 'PUBLISHED'   # pending in outer's transaction
        inner_id = submit(inner, after_commit=False, user='editor',
                          scheduler=ImmediateScheduler())
        assert hooks.getSite() is site
        assert [p.principal.id for p in
                queryInteraction().participations] == ['editor']
        return get_status(inner_id).state

    status = wait(run(outer, site_db, scheduler=one_thread), TIMEOUT)
    assert (status.state, status.result) == ('succeeded', 'succeeded')
    assert read(site_db, lambda r: (r['site']['doc'].state,
                                    r['inner'])) == ('PUBLISHED', 'done')


def test_memory_stays_flat_under_many_jobs(site_db):
    store = MemoryJobStore(keep_count=50)
    previous = jobs.set_job_store(store)
    try:
        ids = [run(int, site_db) for _ in range(400)]
        for job_id in ids:  # a pruned job answers 'unknown' at once
            wait(job_id, TIMEOUT)
    finally:
        jobs.set_job_store(previous)
    store.prune()
    assert len(store) <= 50


# -- persistent objects in arguments and results --

def _where(doc_in_list, mapping):
    from cipher.background import current_connection
    conn = current_connection()
    doc = doc_in_list[0][0]
    doc.title = 'retitled by the job'
    return (doc._p_jar is conn, mapping['doc']._p_jar is conn,
            [mapping['doc'], (doc,)])


def test_persistent_objects_at_any_depth_go_by_oid_both_ways(site_db):
    conn = site_db.open()
    try:
        site = conn.root()['site']
        doc = site['doc']
        job_id = submit(_where, ([(doc, 1)], {'doc': doc}), site=site,
                        user='editor', after_commit=False,
                        scheduler=ImmediateScheduler())
        status = get_status(job_id)
        assert status.state == 'succeeded', status.error
        in_job_conn, mapped_in_job_conn, result = status.result
        assert (in_job_conn, mapped_in_job_conn) == (True, True)
        # The result names the objects by OID: nothing of the job's
        # connection reaches the caller.
        assert result == [doc._p_oid, (doc._p_oid,)]
        # The caller's object was never written through.
        assert doc._p_changed is False and doc.title == 'Annual report'
        transaction.commit()  # commits nothing of the job's
    finally:
        transaction.abort()
        conn.close()
    assert read(site_db, lambda r: r['site']['doc'].title) == (
        'retitled by the job')


def test_plain_containers_reach_the_job_as_the_same_objects(site_db):
    shared = {'seen': []}
    conn = site_db.open()
    try:
        job_id = submit(lambda box: box['seen'].append(box is shared),
                        (shared,), site=conn.root()['site'], user='editor',
                        after_commit=False, scheduler=ImmediateScheduler())
    finally:
        conn.close()
    assert get_status(job_id).state == 'succeeded'
    assert shared['seen'] == [True]
