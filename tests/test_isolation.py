"""The caller is never touched: a busy thread is refused before anything
changes, a unit leaves nothing behind (not even in zope.security's
"previous interaction" slot), and jobs follow the transaction manager
and the savepoints of the caller's connection."""
import pytest
import transaction
from zope.component import hooks
from zope.security.management import endInteraction
from zope.security.management import newInteraction
from zope.security.management import queryInteraction
from zope.security.management import restoreInteraction

from cipher.background import jobs
from cipher.background.context import Participation
from cipher.background.context import UnitOfWork
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.demo import Principal
from cipher.background.errors import ConfigurationError
from cipher.background.errors import ThreadBusy
from cipher.background.scheduler import ImmediateScheduler
from cipher.background.testing import immediate
from cipher.background.thread import BackgroundWorkerThread
from helpers import add_site
from helpers import read


class Touch(BackgroundWorkerThread):
    def scheduleNextWork(self):
        return True

    def doWork(self):
        hooks.getSite()._p_jar.root()['touched'] = True


class Once(Touch):
    def scheduleNextWork(self):
        return not self.stopped and not self.status.units_done


@pytest.fixture
def explicit(mapping_db):
    """A connection to a database with a demo site, opened with an
    explicit-mode transaction manager (pyramid_tm's recommended mode)."""
    add_site(mapping_db)
    manager = transaction.TransactionManager(explicit=True)
    conn = mapping_db.open(transaction_manager=manager)
    yield conn
    conn.close()


# -- 8: a busy thread is refused, untouched --

def test_runOnce_with_a_pending_write_refuses_and_keeps_it(mapping_db):
    worker = Touch(mapping_db, add_site(mapping_db), 'site', 'editor')
    conn = mapping_db.open()
    try:
        conn.root()['mine'] = 'pending'
        with pytest.raises(ThreadBusy, match='transaction is in progress'):
            worker.runOnce()
        transaction.commit()  # the caller's write is still there
    finally:
        conn.close()
    assert read(mapping_db, lambda r: (r['mine'], 'touched' in r)) == (
        'pending', False)


def test_a_unit_run_under_a_site_or_interaction_refuses(mapping_db):
    add_site(mapping_db)
    uow = UnitOfWork(mapping_db, principal_id='editor')
    conn = mapping_db.open()
    try:
        with ZopeSite(conn.root()['site']):
            with pytest.raises(ThreadBusy, match='local site is set'):
                uow.run(lambda: None)
            assert hooks.getSite() is conn.root()['site']
        with ZopeInteraction(Participation(Principal('admin'))):
            with pytest.raises(ThreadBusy, match='interaction is active'):
                uow.run(lambda: None)
            assert [p.principal.id for p in
                    queryInteraction().participations] == ['admin']
    finally:
        transaction.abort()
        conn.close()


def test_the_previous_interaction_slot_is_given_back(mapping_db):
    site_oid = add_site(mapping_db)
    newInteraction(Participation(Principal('caller')))
    endInteraction()  # now zope.security remembers 'caller' as previous
    Touch(mapping_db, site_oid, 'site', 'editor').runOnce()
    assert queryInteraction() is None
    restoreInteraction()
    try:
        assert [p.principal.id for p in
                queryInteraction().participations] == ['caller']
    finally:
        endInteraction()
        endInteraction()  # and forget it


def test_a_clean_thread_stays_clean_after_a_unit(mapping_db):
    Touch(mapping_db, add_site(mapping_db), 'site', 'editor').runOnce()
    restoreInteraction()  # nothing of the unit comes back
    assert queryInteraction() is None
    assert hooks.getSite() is None


# -- 9: leaving with uncommitted changes --

def test_leaving_entered_with_uncommitted_changes_aborts_then_closes(
        mapping_db):
    uow = UnitOfWork(mapping_db, add_site(mapping_db), 'editor')
    with uow.entered() as scope:
        scope.connection.root()['unfinished'] = 1
    assert all(info['opened'] is None
               for info in mapping_db.connectionDebugInfo())
    assert read(mapping_db, lambda r: 'unfinished' in r) is False
    assert queryInteraction() is None and hooks.getSite() is None


# -- 11: the transaction manager of the caller's connection --

def _mark(name):
    from cipher.background import current_connection
    current_connection().root()[name] = True


def test_jobs_follow_the_transaction_manager_of_the_callers_connection(explicit, mapping_db):
    conn, manager = explicit, explicit.transaction_manager
    with immediate():
        manager.begin()
        site = conn.root()['site']
        job_id = jobs.submit(_mark, ('explicit',), site=site,
                             user='editor')
        transaction.commit()  # the thread's default: not the caller's
        assert jobs.get_status(job_id).state == 'pending-commit'
        manager.commit()
    assert jobs.get_status(job_id).state == 'succeeded'
    assert read(mapping_db, lambda r: r['explicit']) is True


def test_a_failed_explicit_request_never_fires_later(explicit, mapping_db):
    conn, manager = explicit, explicit.transaction_manager
    with immediate():
        manager.begin()
        job_id = jobs.submit(_mark, ('failed',),
                             site=conn.root()['site'], user='editor')
        manager.abort()  # the view raised
        transaction.commit()  # an unrelated commit of the thread
        manager.begin()
        manager.commit()  # the next request
    assert jobs.get_status(job_id).state == 'dropped'
    assert read(mapping_db, lambda r: 'failed' in r) is False


def test_a_transaction_manager_that_disagrees_is_refused(mapping_db):
    add_site(mapping_db)
    manager = transaction.TransactionManager()
    conn = mapping_db.open(transaction_manager=manager)
    try:
        with pytest.raises(ConfigurationError, match='transaction manager'):
            jobs.submit(_mark, ('x',), site=conn.root()['site'],
                        user='editor',
                        transaction_manager=transaction.TransactionManager())
    finally:
        manager.abort()
        conn.close()


def test_startAfterCommit_follows_the_given_transaction_manager(mapping_db):
    site_oid = add_site(mapping_db)
    manager = transaction.TransactionManager()
    worker = Once(mapping_db, site_oid, 'site', 'editor')
    worker.startAfterCommit(manager)
    transaction.commit()
    assert worker.status.state == 'pending-commit'
    manager.commit()
    worker.join(60)
    assert worker.status.units_done == 1


# -- 12: savepoints --

def test_a_rolled_back_savepoint_drops_the_jobs_asked_after_it(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        site = conn.root()['site']
        with immediate():
            kept = jobs.submit(_mark, ('kept',), site=site, user='editor')
            savepoint = transaction.savepoint()
            dropped = jobs.submit(_mark, ('dropped',), site=site,
                                  user='editor')
            savepoint.rollback()
            transaction.commit()
        assert jobs.get_status(kept).state == 'succeeded'
        assert jobs.get_status(dropped).state == 'dropped'
        assert read(mapping_db, lambda r: ('kept' in r, 'dropped' in r)) == (
            True, False)
    finally:
        transaction.abort()
        conn.close()


def test_a_savepoint_taken_before_any_job_drops_them_all(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        site = conn.root()['site']
        with immediate():
            site['doc'].title = 'changed'  # something to commit
            savepoint = transaction.savepoint()
            first = jobs.submit(_mark, ('first',), site=site, user='editor')
            savepoint.rollback()
            second = jobs.submit(_mark, ('second',), site=site,
                                 user='editor')
            transaction.commit()
        assert jobs.get_status(first).state == 'dropped'
        assert jobs.get_status(second).state == 'succeeded'
    finally:
        transaction.abort()
        conn.close()


def test_startAfterCommit_in_a_rolled_back_savepoint_never_starts(
        mapping_db):
    worker = Touch(mapping_db, add_site(mapping_db), 'site', 'editor')
    savepoint = transaction.savepoint()
    worker.startAfterCommit()
    savepoint.rollback()
    transaction.commit()
    assert worker.status.state == 'dropped'
    assert worker.ident is None


# -- 15: a job run at once inside another keeps the outer one current --

def _outer():
    from cipher.background import current_job
    from cipher.background import set_progress
    outer = current_job().id
    inner = jobs.submit(_inner, after_commit=False,
                        scheduler=ImmediateScheduler(), user='editor',
                        site=hooks.getSite())
    set_progress(50, 'after the inner job')  # NotInJob on the old code
    return outer == current_job().id, jobs.get_status(inner).result


def _inner():
    from cipher.background import current_job
    return current_job().name


def test_a_job_run_at_once_inside_another_leaves_the_outer_current(
        mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        job_id = jobs.submit(_outer, site=conn.root()['site'], user='editor',
                             after_commit=False,
                             scheduler=ImmediateScheduler())
    finally:
        conn.close()
    status = jobs.get_status(job_id)
    assert status.state == 'succeeded', status.error
    assert status.result == (True, 'test_isolation._inner')
    assert status.progress == 50


# -- found by the review of this change --

def test_startAfterCommit_follows_the_site_connections_manager(explicit, mapping_db):
    conn, manager = explicit, explicit.transaction_manager
    manager.begin()
    worker = Once.forSite(conn.root()['site'], 'editor')
    worker.startAfterCommit()  # no manager named: the site's
    transaction.commit()  # the thread's default: not the request's
    assert worker.status.state == 'pending-commit'
    manager.commit()
    worker.join(60)
    assert worker.status.units_done == 1


def test_an_explicit_manager_with_no_transaction_is_refused_cleanly(explicit, mapping_db):
    conn, manager = explicit, explicit.transaction_manager
    manager.begin()
    site = conn.root()['site']
    manager.abort()  # the request is over
    before = len(jobs.get_job_store())
    with pytest.raises(ConfigurationError, match='no transaction begun'):
        jobs.submit(_mark, ('late',), site=site, user='editor')
    assert len(jobs.get_job_store()) == before  # no phantom job
    worker = Once.forSite(site, 'editor')
    with pytest.raises(ConfigurationError, match='no transaction begun'):
        worker.startAfterCommit()
    assert worker.status.state == 'new'  # and it can still start


def test_stop_all_drops_workers_still_waiting_for_a_commit(mapping_db):
    from cipher.background import stop_all
    worker = Once(mapping_db, add_site(mapping_db), 'site', 'editor')
    worker.startAfterCommit()
    assert stop_all(60) == []
    transaction.commit()
    assert worker.status.state == 'dropped'
    assert worker.ident is None
