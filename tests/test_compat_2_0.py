"""cipher.background 2.0's own tests keep passing: stub sites whose OID
is any key and whose site manager is None, workers made directly or by
forSite, ``run()`` called in the test's thread."""
import logging

import pytest
from zope.component.hooks import getSite
from zope.security.management import queryInteraction

from cipher.background import testing
from cipher.background.errors import ConfigurationError
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.thread import BackgroundWorkerThread
from cipher.background.thread import log


class SiteStub:
    __name__ = 'testsite'

    def __init__(self):
        self._p_jar = ConnectionStub(DbStub())
        self._p_oid = 42
        self._p_jar._db._objects[self._p_oid] = self

    def getSiteManager(self):
        return None


class ConnectionStub:
    def __init__(self, db):
        self._db = db
        self._db.opened += 1

    def db(self):
        return self._db

    def get(self, oid):
        return self._db._objects[oid]

    def close(self):
        self._db.closed += 1


class DbStub:
    opened = closed = 0

    def __init__(self):
        self._objects = {}

    def open(self):
        return ConnectionStub(self)


class ForTest(BackgroundWorkerThread):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._tasks = [None] * 5

    def scheduleNextWork(self):
        if not self._tasks:
            log.info('no tasks left to schedule')
            return False
        log.info('scheduling a task')
        self._tasks.pop()
        return True


@pytest.fixture
def logbuf():
    buf = testing.setUpLogging(log, logging.INFO)
    yield buf
    testing.tearDownLogging(log)


def test_construction_directly_and_for_a_stub_site():
    site = SiteStub()
    direct = ForTest(site_db=site._p_jar.db(), site_oid=site._p_oid,
                     site_name='testsite', user_name='someuser')
    assert direct.name == ('background worker thread (ForTest) for '
                           'testsite')
    assert ForTest.forSite(site=site, user_name='someuser').name == \
        direct.name


def test_notes_follow_the_thread_name_and_templates():
    thread = ForTest.forSite(SiteStub(), 'someuser')
    thread.name = 'my thread'
    assert thread.getTransactionNote() == 'my thread'
    assert thread.getCleanupNote() == 'my thread cleanup'
    thread.work_transaction_note = ('work for %(site_name)s on behalf of '
                                    '%(user_name)s')
    assert thread.getTransactionNote() == (
        'work for testsite on behalf of someuser')


def test_run_in_the_tests_thread_gives_interaction_site_connection(logbuf):
    site = SiteStub()
    thread = ForTest.forSite(site, 'someuser')

    def doWork(self):
        log.info('got interaction: %s', queryInteraction() is not None)
        log.info('got site: %s', getSite() is not None)
        self._tasks = []  # terminate early
    thread.doWork = doWork.__get__(thread)
    thread.run()
    assert logbuf.getvalue().splitlines() == [
        'scheduling a task', 'got interaction: True', 'got site: True',
        'no tasks left to schedule']
    assert (site._p_jar.db().opened, site._p_jar.db().closed) == (2, 1)
    assert queryInteraction() is None and getSite() is None


def test_an_exception_in_doWork_is_logged_and_the_loop_goes_on(logbuf):
    site = SiteStub()
    thread = ForTest.forSite(site, 'someuser')
    thread.name = 'this thread'
    thread.failure_backoff = 0  # the loop goes on at once

    def doWork(self):
        self._tasks = []
        raise Exception('something happened')
    thread.doWork = doWork.__get__(thread)
    thread.run()
    text = logbuf.getvalue()
    assert text.startswith('scheduling a task\nException in this thread\n'
                           'Traceback (most recent call last):\n')
    assert 'Exception: something happened\nno tasks left to schedule' in text
    assert (site._p_jar.db().opened, site._p_jar.db().closed) == (2, 1)
    assert queryInteraction() is None and getSite() is None


def test_an_exception_in_scheduling_terminates_the_thread(logbuf):
    thread = ForTest.forSite(SiteStub(), 'someuser')
    thread.name = 'this thread'

    def scheduleNextWork(self):
        log.info('scheduling a task')
        raise Exception('something happened')
    thread.scheduleNextWork = scheduleNextWork.__get__(thread)
    thread.run()
    text = logbuf.getvalue()
    assert text.startswith('scheduling a task\nException in this thread, '
                           'thread terminated\nTraceback')
    assert thread.status.state == 'crashed'


def test_the_default_scheduleNextWork_ends_at_once():
    assert BackgroundWorkerThread.forSite(
        SiteStub(), 'someuser').scheduleNextWork() is False


def test_what_can_never_work_is_still_a_clear_error():
    class NoJar:
        _p_oid = 1

        def getSiteManager(self):
            return None

    with pytest.raises(ConfigurationError, match='_p_jar'):
        BackgroundWorkerThread.forSite(NoJar(), 'someuser')


def test_pybackground_stopped_before_start_after_start_after_shutdown():
    scheduler = BackgroundScheduler(max_workers=1)
    assert scheduler.stopped is True
    scheduler.start(lambda: None)
    assert scheduler.stopped is False
    scheduler.shutdown()
    assert scheduler.stopped is True
