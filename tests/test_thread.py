"""BackgroundWorkerThread: the original API, the loop, start and stop."""
import threading

import pytest
import transaction
from persistent.mapping import PersistentMapping
from zope.component import getUtility
from zope.component import hooks
from zope.interface.verify import verifyObject
from zope.security.management import queryInteraction

from cipher.background import workers
from cipher.background.demo import IPublisher
from cipher.background.demo import PublishWorker
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import SiteNotFound
from cipher.background.interfaces import IBackgroundWorker
from cipher.background.interfaces import IWorkerStatus
from cipher.background.thread import BackgroundWorkerThread
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class Units(BackgroundWorkerThread):
    """Runs the callables it is given, one unit each."""

    def __init__(self, *args, units=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.units = list(units)
        self.cleanups = []

    def scheduleNextWork(self):
        return bool(self.units)

    def doWork(self):
        self.units[0]()

    def doCleanup(self):
        self.cleanups.append(self.units.pop(0))


def worker_for(db, cls=Units, user='editor', **kwargs):
    return cls(db, add_site(db), 'site', user, **kwargs)


# -- the original API --

def test_constructor_attributes_name_and_daemon(mapping_db):
    site_oid = add_site(mapping_db)
    worker = BackgroundWorkerThread(mapping_db, site_oid, 'site', 'editor')
    assert (worker.site_db, worker.site_oid, worker.site_name,
            worker.user_name) == (mapping_db, site_oid, 'site', 'editor')
    assert worker.name == (
        'background worker thread (BackgroundWorkerThread) for site')
    assert worker.daemon is True
    assert BackgroundWorkerThread(mapping_db, site_oid, 'site', 'editor',
                                  daemon=False).daemon is False
    assert worker.getTransactionNote() == worker.name
    assert worker.getCleanupNote() == worker.name + ' cleanup'
    assert worker.scheduleNextWork() is False
    assert worker.runOnce() is False


def test_worker_and_status_provide_their_interfaces(mapping_db):
    worker = worker_for(mapping_db)
    assert verifyObject(IBackgroundWorker, worker)
    assert verifyObject(IWorkerStatus, worker.status)


def test_note_templates_may_use_every_name(mapping_db):
    class Noted(BackgroundWorkerThread):
        description = '%(class_name)s/%(site_name)s/%(user_name)s'
        work_transaction_note = 'work %(thread_name)s %(user_name)s'
        cleanup_transaction_note = 'clean %(class_name)s %(site_name)s'
    worker = worker_for(mapping_db, Noted)
    assert worker.name == 'Noted/site/editor'
    assert worker.getTransactionNote() == 'work Noted/site/editor editor'
    assert worker.getCleanupNote() == 'clean Noted site'


def test_forSite_takes_db_oid_and_name_from_the_site(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    site = conn.root()['site']
    worker = PublishWorker.forSite(site, 'editor', daemon=False,
                                   names=['doc'])
    conn.close()
    assert (worker.site_db, worker.site_oid, worker.site_name,
            worker.user_name, worker.daemon, worker.pending) == (
        mapping_db, site._p_oid, 'site', 'editor', False, ['doc'])


def test_unit_runs_with_site_user_note_and_commits(file_db):
    worker = worker_for(file_db, PublishWorker, names=['doc'])
    assert worker.runOnce() is True
    assert read(file_db, lambda r: r['site']['doc'].state) == 'PUBLISHED'
    assert read(file_db, lambda r: list(r['site']['doc'].history)) == [
        ('PUBLISHED', 'editor')]
    work = file_db.undoLog(0, 1)[0]  # the clean-up wrote nothing
    assert work['user_name'] == '/ editor'
    assert work['description'] == (
        "Publish a document (publisher for site)\nPublished 'Annual report'")
    assert worker.runOnce() is False
    assert worker.status.units_done == 1
    assert hooks.getSite() is None and queryInteraction() is None


def test_each_unit_gets_its_own_connection_closed_afterwards(mapping_db):
    connections = []
    worker = worker_for(mapping_db, units=[
        lambda: connections.append(hooks.getSite()._p_jar)] * 2)
    worker.runOnce()
    worker.runOnce()
    assert len(connections) == 2
    assert all(conn.opened is None for conn in connections)


def test_doWork_exception_is_logged_aborted_and_the_loop_goes_on(
        any_db, logged):
    def half_then_fail():
        hooks.getSite()['doc'].state = 'HALF'
        raise ValueError('cannot publish')

    def succeed():
        hooks.getSite()['doc'].title = 'Done'

    worker = worker_for(any_db, units=[half_then_fail, succeed])
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert worker.cleanups == [half_then_fail, succeed]  # cleanup ran twice
    doc = read(any_db, lambda r: (r['site']['doc'].state,
                                  r['site']['doc'].title))
    assert doc == ('DRAFT', 'Done')  # the failed unit wrote nothing
    text = logged.getvalue()
    assert text.startswith('Exception in %s\nTraceback' % worker.name)
    assert 'ValueError: cannot publish' in text
    assert worker.status.units_failed == 1
    assert worker.status.units_done == 1
    assert 'ValueError: cannot publish' in worker.status.last_error


def test_exception_in_doCleanup_is_logged_and_the_work_is_kept(
        mapping_db, logged):
    class BadCleanup(Units):
        def doCleanup(self):
            super().doCleanup()
            raise RuntimeError('cleanup failed')

    worker = worker_for(mapping_db, BadCleanup, units=[
        lambda: hooks.getSite()['doc'].__setattr__('state', 'PUBLISHED')])
    worker.runOnce()
    assert read(mapping_db, lambda r: r['site']['doc'].state) == 'PUBLISHED'
    assert 'RuntimeError: cleanup failed' in logged.getvalue()


def test_scheduleNextWork_exception_ends_the_thread(mapping_db, logged):
    class Broken(BackgroundWorkerThread):
        def scheduleNextWork(self):
            raise KeyError('queue gone')

    worker = worker_for(mapping_db, Broken)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert logged.getvalue().startswith(
        'Exception in %s, thread terminated\nTraceback' % worker.name)
    assert worker.status.state == 'crashed'
    assert worker.stopped


def test_normal_path_adds_no_log_chatter(mapping_db, logged):
    worker = worker_for(mapping_db, PublishWorker, names=['doc'])
    worker.start()
    worker.join(TIMEOUT)
    assert logged.getvalue() == ''


def test_site_and_interaction_are_reset_in_the_thread(mapping_db):
    after = {}

    class Checking(Units):
        def run(self):
            super().run()
            after['site'] = hooks.getSite()
            after['interaction'] = queryInteraction()

    def fail():
        raise ValueError

    worker = worker_for(mapping_db, Checking, units=[fail, lambda: None])
    worker.start()
    worker.join(TIMEOUT)
    assert after == {'site': None, 'interaction': None}


def test_local_utilities_resolve_in_the_unit(mapping_db):
    found = []
    worker = worker_for(mapping_db, units=[
        lambda: found.append(getUtility(IPublisher)._p_oid)])
    worker.runOnce()
    assert found and found[0] is not None


# -- start after commit --

def test_startAfterCommit_starts_when_the_request_commits(file_db):
    add_site(file_db)
    conn = file_db.open()
    site = conn.root()['site']
    from cipher.background.demo import Document
    site['fresh'] = Document('Written by the request')
    worker = PublishWorker.forSite(site, 'editor', names=['fresh'])
    worker.startAfterCommit()
    assert worker.status.state == 'pending-commit'
    assert worker.ident is None  # not before the commit
    transaction.commit()
    conn.close()
    worker.join(TIMEOUT)
    assert worker.ident is not None and not worker.is_alive()
    assert worker.status.units_done == 1
    assert read(file_db, lambda r: r['site']['fresh'].state) == 'PUBLISHED'


def test_startAfterCommit_never_starts_when_the_request_aborts(mapping_db):
    worker = worker_for(mapping_db, PublishWorker, names=['doc'])
    worker.startAfterCommit()
    transaction.abort()
    assert worker.ident is None
    assert worker.status.state == 'dropped'
    transaction.commit()  # a later transaction does not start it either
    assert worker.ident is None
    assert read(mapping_db, lambda r: r['site']['doc'].state) == 'DRAFT'


def test_a_site_made_in_the_same_request_is_taken(file_db):
    # The request makes the site and starts a worker for it: forSite()
    # learns the site's OID from a savepoint, the worker starts after the
    # commit and finds the site under that OID.
    from cipher.background import demo
    conn = file_db.open()
    site = demo.make_site(conn.root(), 'made-now')
    assert site._p_oid is None  # nothing stored it yet
    worker = PublishWorker.forSite(site, 'editor', names=['doc'])
    assert worker.site_oid == site._p_oid is not None
    worker.startAfterCommit()
    transaction.commit()
    conn.close()
    worker.join(TIMEOUT)
    assert worker.status.units_done == 1
    assert read(file_db, lambda r: r['made-now']['doc'].state) == 'PUBLISHED'


def test_a_site_made_in_a_request_that_aborts_starts_nothing(mapping_db):
    from cipher.background import demo
    conn = mapping_db.open()
    worker = PublishWorker.forSite(demo.make_site(conn.root(), 'gone'),
                                   'editor', names=['doc'])
    worker.startAfterCommit()
    transaction.abort()
    conn.close()
    assert worker.status.state == 'dropped' and worker.ident is None
    assert read(mapping_db, lambda r: 'gone' in r) is False


def test_starting_twice_is_a_clear_error(mapping_db):
    worker = worker_for(mapping_db)
    worker.startAfterCommit()
    with pytest.raises(AlreadyStarted, match='create a new worker'):
        worker.start()
    with pytest.raises(AlreadyStarted):
        worker.startAfterCommit()
    transaction.abort()
    started = worker_for(mapping_db)
    started.start()
    started.join(TIMEOUT)
    with pytest.raises(AlreadyStarted):
        started.start()
    with pytest.raises(RuntimeError):  # AlreadyStarted is a RuntimeError
        started.start()


# -- stop and join --

class Waiting(BackgroundWorkerThread):
    """Waits an hour between units; tells when it waits."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()
        self.connections = []

    def scheduleNextWork(self):
        self.waiting.set()
        return self.wait(3600)

    def doWork(self):
        self.connections.append(hooks.getSite()._p_jar)


def test_stop_wakes_a_waiting_worker_and_joins(mapping_db):
    worker = worker_for(mapping_db, Waiting)
    worker.start()
    assert worker.waiting.wait(TIMEOUT)
    assert worker in workers()
    assert worker.status.state == 'waiting'
    assert worker.stop(timeout=TIMEOUT) is True
    assert not worker.is_alive()
    assert worker.stopped
    assert worker.status.state == 'stopped'
    assert worker not in workers()
    assert worker.connections == []  # woken by stop, not by the hour


def test_stop_ends_the_loop_after_the_current_unit(mapping_db):
    in_unit = threading.Event()

    class Endless(BackgroundWorkerThread):
        def scheduleNextWork(self):
            return True

        def doWork(self):
            in_unit.set()
            # The unit goes on until stop() is called, then still commits.
            assert not self.wait(TIMEOUT)
            root = hooks.getSite()._p_jar.root()
            root['units'] = root.get('units', 0) + 1

    worker = worker_for(mapping_db, Endless)
    worker.start()
    assert in_unit.wait(TIMEOUT)
    assert worker.stop(TIMEOUT)
    assert read(mapping_db, lambda r: r['units']) == 1
    assert worker.status.units_done == 1


def test_stop_from_inside_doWork_and_on_unstarted_workers(mapping_db):
    class SelfStopping(Units):
        def doWork(self):
            self.stop()
            super().doWork()

    worker = worker_for(mapping_db, SelfStopping,
                        units=[lambda: None, lambda: None])
    worker.start()
    worker.join(TIMEOUT)
    assert len(worker.units) == 1  # the second unit never ran
    assert worker_for(mapping_db).stop() is True  # never started


def test_the_connection_is_closed_before_the_thread_ends(mapping_db):
    worker = worker_for(mapping_db, Waiting)
    worker.start()
    assert worker.waiting.wait(TIMEOUT)
    worker.stop(TIMEOUT)
    # Every connection is back in the pool: none is held by the thread.
    assert all(info['opened'] is None
               for info in mapping_db.connectionDebugInfo())


# -- status and the registry --

def test_status_counts_units_and_keeps_times(mapping_db):
    def fail():
        raise ValueError('nope')

    worker = worker_for(mapping_db, units=[lambda: None, fail])
    assert worker.status.state == 'new' and worker.status.started is None
    worker.start()
    worker.join(TIMEOUT)
    status = worker.status
    assert (status.name, status.state, status.units_done,
            status.units_failed, status.conflicts_retried) == (
        worker.name, 'stopped', 1, 1, 0)
    assert status.last_error == 'ValueError: nope'
    assert status.started <= status.last_error_time <= status.last_run


# -- bad input --

def test_forSite_on_an_object_not_in_a_database():
    from cipher.background.demo import Document
    with pytest.raises(ConfigurationError, match='not stored in a ZODB'):
        BackgroundWorkerThread.forSite(Document('loose'), 'editor')


def test_forSite_on_a_stored_object_that_is_not_a_site(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    with pytest.raises(NotASite, match='setSiteManager'):
        BackgroundWorkerThread.forSite(conn.root()['site']['doc'], 'editor')
    conn.close()


def test_start_with_a_site_oid_that_does_not_exist(mapping_db):
    worker = BackgroundWorkerThread(mapping_db, b'\0' * 7 + b'\x77',
                                    'gone', 'editor')
    with pytest.raises(SiteNotFound, match='startAfterCommit'):
        worker.start()
    assert worker.ident is None and worker not in workers()


@pytest.mark.parametrize('site_oid', [None, 7, 'abc', b'short'])
def test_site_oid_must_be_an_oid(mapping_db, site_oid):
    with pytest.raises(ConfigurationError, match='8-byte ZODB OID'):
        BackgroundWorkerThread(mapping_db, site_oid, 'site', 'editor')


def test_user_name_must_be_a_string(mapping_db):
    with pytest.raises(ConfigurationError, match='principal id'):
        BackgroundWorkerThread(mapping_db, b'\0' * 8, 'site', 42)


def test_site_removed_after_start_ends_the_worker_with_a_clear_log(
        mapping_db, logged):
    worker = worker_for(mapping_db, units=[lambda: None] * 3)
    conn = mapping_db.open()
    root = conn.root()
    root['moved'] = PersistentMapping(n=1)
    transaction.commit()
    worker.site_oid = root['moved']._p_oid
    conn.close()
    worker.runOnce()
    assert 'thread terminated: ' in logged.getvalue()
    assert 'is not a site' in logged.getvalue()
    assert worker.status.state == 'crashed'
