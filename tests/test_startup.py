"""Zope start-up wiring: workers start when the database opens."""
import threading

import pytest
import transaction
import zope.component.testing
from zope.component import hooks
from zope.component import provideUtility
from zope.configuration import xmlconfig
from zope.event import notify
from zope.processlifetime import DatabaseOpenedWithRoot

import cipher.background
from cipher.background import startup
from cipher.background import workers
from cipher.background.errors import ConfigurationError
from cipher.background.interfaces import IWorkerFactory
from cipher.background.periodic import PeriodicBackgroundWorkerThread
from cipher.background.testing import setUpLogging
from cipher.background.testing import tearDownLogging
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


@pytest.fixture
def zcml():
    """The component registry with cipher.background's configure.zcml."""
    zope.component.testing.setUp()
    context = xmlconfig.file('meta.zcml', zope.component)
    xmlconfig.file('configure.zcml', cipher.background, context=context)
    yield
    startup.stopWorkers()
    zope.component.testing.tearDown()


ticked = threading.Semaphore(0)  # released once per committed tick


class Ticker(PeriodicBackgroundWorkerThread):
    interval = 3600

    def doWork(self):
        root = hooks.getSite()._p_jar.root()
        root['ticks'] = root.get('ticks', 0) + 1
        # Two tickers write the same root: one may conflict and retry, so
        # count a tick only once it is committed.
        transaction.get().addAfterCommitHook(
            lambda committed: committed and ticked.release())


def test_declared_workers_start_when_the_database_opens(zcml, file_db):
    add_site(file_db)
    while ticked.acquire(blocking=False):  # ticks left by other tests
        pass
    provideUtility(startup.SiteWorkers(Ticker, '/site', 'editor', count=2),
                   IWorkerFactory, name='ticker')
    notify(DatabaseOpenedWithRoot(file_db))
    started = startup.startedWorkers()
    assert len(started) == 2
    assert all(w in workers() for w in started)
    assert {w.user_name for w in started} == {'editor'}
    assert ticked.acquire(timeout=TIMEOUT)  # both workers ticked once
    assert ticked.acquire(timeout=TIMEOUT)
    assert startup.stopWorkers(TIMEOUT) == []
    assert not any(w.is_alive() for w in started)
    assert read(file_db, lambda r: r['ticks']) == 2  # one tick each


def test_a_broken_declaration_is_logged_and_the_others_start(zcml,
                                                             file_db):
    add_site(file_db)
    provideUtility(startup.SiteWorkers(Ticker, '/missing'), IWorkerFactory,
                   name='a-broken')
    provideUtility(lambda db: Ticker.forSite(_site(db), 'editor'),
                   IWorkerFactory,
                   name='b-single')
    log = setUpLogging(startup.log)
    try:
        notify(DatabaseOpenedWithRoot(file_db))
    finally:
        tearDownLogging(startup.log)
    assert "Could not start the background workers 'a-broken'" in \
        log.getvalue()
    assert "SiteNotFound: no 'missing' in the root (it holds 'site')" \
        in log.getvalue()
    assert len(startup.startedWorkers()) == 1


def _site(db):
    conn = db.open()
    site = conn.root()['site']
    conn.close()
    return site


def test_site_workers_validate_their_count():
    with pytest.raises(ConfigurationError, match='count must be'):
        startup.SiteWorkers(Ticker, '/site', count=0)


@pytest.fixture
def switch(monkeypatch):
    """startup's switch as it is in a fresh process, restored after."""
    monkeypatch.delenv(startup.ENVIRONMENT_SWITCH, raising=False)
    monkeypatch.setattr(startup, '_host_says_off', [])
    return monkeypatch


@pytest.mark.parametrize('env, host_reason, starts', [
    (None, None, True),
    ('off', None, False),
    ('0', None, False),
    (None, 'zconsole', False),
    ('on', 'zconsole', True),       # the environment decides first
    ('maybe', None, True),          # warned about, taken as on
])
def test_start_up_workers_are_switched_per_process(zcml, file_db, switch,
                                                   env, host_reason, starts):
    add_site(file_db)
    if env is not None:
        switch.setenv(startup.ENVIRONMENT_SWITCH, env)
    if host_reason is not None:
        startup.skip_startup_workers(host_reason)
    made = []
    provideUtility(lambda db: made.append(db) or [], IWorkerFactory,
                   name='counted')
    buf = setUpLogging(startup.log)
    try:
        notify(DatabaseOpenedWithRoot(file_db))
    finally:
        tearDownLogging(startup.log)
    assert made == ([file_db] if starts else [])
    if not starts:
        assert 'not started in this process (%s' % (
            host_reason or startup.ENVIRONMENT_SWITCH) in buf.getvalue()


def test_a_declared_queue_runner_serves_durable_jobs(zcml, file_db):
    import durable_jobs
    from cipher.background import SYSTEM
    from cipher.background import enqueue_call
    from cipher.background import wait
    add_site(file_db)
    provideUtility(startup.QueueWorkers(threads=1), IWorkerFactory,
                   name='queue')
    notify(DatabaseOpenedWithRoot(file_db))
    runner, = startup.startedWorkers()
    assert runner.is_alive() and 'queue runner of default' in runner.name
    conn = file_db.open()
    try:
        job_id = enqueue_call(durable_jobs.count, ('served',),
                              site=conn.root()['site'], user=SYSTEM)
        transaction.commit()  # wakes the runner of this process
    finally:
        conn.close()
    assert wait(job_id, TIMEOUT).state == 'succeeded'
    assert startup.stopWorkers(TIMEOUT) == []
    assert not runner.is_alive()
