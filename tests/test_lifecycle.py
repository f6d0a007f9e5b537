"""Lifecycle and states: failing units back off instead of spinning, final
states are final and distinct, and jobs have a stop story."""
import subprocess
import sys
import threading

import pytest
from zope.component import hooks

from cipher.background import jobs
from cipher.background import stop_all
from cipher.background.demo import PublishWorker
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.scheduler import ImmediateScheduler
from cipher.background.thread import BackgroundWorkerThread
from helpers import TIMEOUT
from helpers import add_site
from helpers import read
from helpers import subprocess_env


# -- 13: failures on the way in --

class QuickBackoff(PublishWorker):
    """The README's publisher, backing off briefly; counts its waits."""

    failure_backoff = 0.001
    failure_backoff_max = 0.004

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.backoffs = []

    def wait(self, seconds):
        self.backoffs.append(seconds)
        return super().wait(seconds)


def test_an_unknown_user_backs_off_cleans_up_and_moves_on(mapping_db,
                                                          logged):
    worker = QuickBackoff(mapping_db, add_site(mapping_db), 'site', 'ghost',
                          names=['doc'] * 6)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert worker.pending == []  # doCleanup ran for every unit
    assert worker.status.units_failed == 6
    assert worker.status.state == 'stopped'
    assert worker.backoffs == [0.001, 0.002, 0.004, 0.004, 0.004, 0.004]
    lines = logged.getvalue()
    assert lines.count('Traceback') == 1  # the first time only
    assert lines.count('the same, ') == 5
    assert read(mapping_db, lambda r: r['site']['doc'].state) == 'DRAFT'


def test_a_closed_database_ends_the_worker_crashed(mapping_db, logged):
    class Forever(BackgroundWorkerThread):
        def scheduleNextWork(self):
            return True

    worker = Forever(mapping_db, add_site(mapping_db), 'site', 'editor')
    mapping_db.close()
    worker.runOnce()
    assert worker.status.state == 'crashed'
    assert 'DatabaseClosed' in worker.status.last_error
    assert 'thread terminated' in logged.getvalue()


# -- 14: final states are final and distinct --

def test_a_worker_whose_site_disappears_is_crashed_not_stopped(mapping_db):
    class Forever(BackgroundWorkerThread):
        def scheduleNextWork(self):
            return True

    worker = Forever(mapping_db, b'\0' * 7 + b'\x77', 'gone', 'editor')
    worker._launch()  # start() would refuse the missing site at once
    worker.join(TIMEOUT)
    assert worker.status.state == 'crashed'
    assert 'SiteNotFound' in worker.status.last_error


@pytest.mark.parametrize('exc', [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_doWork_ends_the_worker_interrupted(mapping_db,
                                                            logged, exc):
    class Interrupted(BackgroundWorkerThread):
        def scheduleNextWork(self):
            return True

        def doWork(self):
            hooks.getSite()._p_jar.root()['half'] = True
            raise exc()

    worker = Interrupted(mapping_db, add_site(mapping_db), 'site', 'editor')
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert worker.status.state == 'interrupted'
    assert logged.getvalue().count('interrupted by %s' % exc.__name__) == 1
    assert read(mapping_db, lambda r: 'half' in r) is False


def _interrupt():
    raise KeyboardInterrupt


def test_an_interrupt_in_a_job_ends_it_interrupted_and_wakes_waiters(
        mapping_db):
    add_site(mapping_db)
    scheduler = BackgroundScheduler(max_workers=1)
    conn = mapping_db.open()
    try:
        job_id = jobs.submit(_interrupt, site=conn.root()['site'],
                             user='editor', after_commit=False,
                             scheduler=scheduler)
        status = jobs.wait(job_id, TIMEOUT)
    finally:
        conn.close()
        scheduler.shutdown()
    assert status.state == 'interrupted'
    assert 'KeyboardInterrupt' in status.error


def test_the_immediate_scheduler_lets_ctrl_c_through(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        with pytest.raises(KeyboardInterrupt):
            jobs.submit(_interrupt, site=conn.root()['site'], user='editor',
                        after_commit=False, scheduler=ImmediateScheduler())
    finally:
        conn.close()


# -- 16: jobs have a stop story --

def _until_cancelled(started):
    started.set()
    while True:
        jobs.check_cancelled()
        threading.Event().wait(0.01)


def test_stop_all_cancels_queued_jobs_and_stops_running_ones(mapping_db):
    add_site(mapping_db)
    scheduler = BackgroundScheduler(max_workers=1)
    started = threading.Event()
    conn = mapping_db.open()
    try:
        site = conn.root()['site']
        running = jobs.submit(_until_cancelled, (started,), site=site,
                              user='editor', after_commit=False,
                              scheduler=scheduler)
        assert started.wait(TIMEOUT)
        queued = jobs.submit(_until_cancelled, (started,), site=site,
                             user='editor', after_commit=False,
                             scheduler=scheduler)
        assert jobs.get_status(queued).state == 'queued'
        assert stop_all(TIMEOUT) == []
    finally:
        conn.close()
        scheduler.shutdown()
    assert jobs.get_status(queued).state == 'cancelled'
    assert jobs.get_status(running).state == 'cancelled'
    assert jobs.get_status(running).cancel_requested


def _conflicting(tries, waits):
    from ZODB.POSException import ConflictError
    from cipher.background import current_connection
    tries.append(1)
    if len(tries) == 1:
        raise ConflictError('retry me')
    current_connection().root()['retried'] = True


def test_a_jobs_retry_wait_holds_no_connection(mapping_db):
    from cipher.background import RetryPolicy
    from cipher.background.context import in_unit
    add_site(mapping_db)
    waits = []

    def sleep(seconds, stop_event=None):
        waits.append((in_unit(), [info['opened'] for info in
                                  mapping_db.connectionDebugInfo()]))
        return False

    conn = mapping_db.open()
    site = conn.root()['site']
    conn.close()
    tries = []
    job_id = jobs.submit(_conflicting, (tries, waits), site=site,
                         user='editor', after_commit=False,
                         scheduler=ImmediateScheduler(),
                         retry_policy=RetryPolicy(sleep=sleep))
    assert jobs.get_status(job_id).state == 'succeeded'
    assert len(waits) == 1
    in_a_unit, opened = waits[0]
    assert in_a_unit is False
    assert all(when is None for when in opened)  # every connection closed


EXIT_SCRIPT = '''
import sys, threading, time
from ZODB import DB
from ZODB.FileStorage import FileStorage
from cipher.background import jobs
from helpers import add_site

db = DB(FileStorage(sys.argv[1]))
add_site(db)
conn = db.open()
site = conn.root()['site']
started = threading.Event()

def endless(started):
    started.set()
    while True:
        jobs.check_cancelled()
        time.sleep(0.01)

running = jobs.submit(endless, (started,), site=site, user='editor',
                      after_commit=False)
started.wait(60)
print('exiting with a job running', flush=True)
'''


def test_interpreter_exit_stops_a_job_that_never_ends(tmp_path):
    done = subprocess.run(
        [sys.executable, '-c', EXIT_SCRIPT, str(tmp_path / 'Data.fs')],
        env=subprocess_env(), capture_output=True, text=True,
        timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert 'exiting with a job running' in done.stdout
    assert 'Traceback' not in done.stderr


def test_cancel_interrupts_a_job_waiting_to_retry(mapping_db):
    from cipher.background import RetryPolicy
    from ZODB.POSException import ConflictError
    add_site(mapping_db)
    waiting = threading.Event()

    def sleep(seconds, stop_event):
        waiting.set()
        return stop_event.wait(seconds)

    def always_conflicts():
        raise ConflictError('forever')

    scheduler = BackgroundScheduler(max_workers=1)
    conn = mapping_db.open()
    try:
        job_id = jobs.submit(
            always_conflicts, site=conn.root()['site'], user='editor',
            after_commit=False, scheduler=scheduler,
            retry_policy=RetryPolicy(sleep=sleep, base_delay=3600,
                                     max_delay=3600, random=lambda: 1.0))
        assert waiting.wait(TIMEOUT)
        assert jobs.cancel(job_id) is True
        assert jobs.wait(job_id, TIMEOUT).state == 'cancelled'
    finally:
        conn.close()
        scheduler.shutdown()
