"""Reliability under stress: conflict storms of workers and jobs, a ZEO
server that goes away mid-run, and security for jobs.

Every unit is numbered and records itself in the database, so a unit
lost, or applied twice, shows in the outcome.
"""
import threading

import pytest
import transaction
from persistent import Persistent
from ZODB import DB
from ZODB.DemoStorage import DemoStorage
from zope.component import hooks
from zope.security.checker import Checker
from zope.security.checker import ProxyFactory

from cipher.background import BackgroundScheduler
from cipher.background import BackgroundWorkerThread
from cipher.background import RetryPolicy
from cipher.background import jobs
from cipher.background.demo import Publisher
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class Tally(Persistent):
    """One object everybody writes: no conflict resolution, so every
    concurrent write is a real ConflictError."""

    def __init__(self):
        self.applied = {}

    def apply(self, number):
        self.applied[number] = self.applied.get(number, 0) + 1
        self._p_changed = True


def prepare(db):
    """A site and a tally; return the site's OID."""
    return add_site(db, tally=Tally())


def apply(number):
    """The unit, for workers and jobs alike."""
    hooks.getSite()._p_jar.root()['tally'].apply(number)


class Numbered(BackgroundWorkerThread):
    """Applies its numbers in order, one per unit; a number is done only
    when its unit commits.  ``gate`` is called before the unit at index
    ``gate_at``."""

    def __init__(self, *args, numbers=(), gate=None, gate_at=None, **kw):
        super().__init__(*args, **kw)
        self.numbers = list(numbers)
        self.gate, self.gate_at, self.done = gate, gate_at, 0

    def scheduleNextWork(self):
        if self.gate is not None and self.done == self.gate_at:
            self.gate()
        return bool(self.numbers)

    def doWork(self):
        apply(self.numbers[0])
        transaction.get().addAfterCommitHook(self._committed)

    def _committed(self, ok):
        if ok:
            self.numbers.pop(0)
            self.done += 1


def check_each_applied_once(db, total):
    applied = read(db, lambda r: dict(r['tally'].applied))
    assert applied == {n: 1 for n in range(total)}


def finish(workers, job_ids):
    """Join the workers (which must end); return the jobs' final states."""
    for worker in workers:
        worker.join(TIMEOUT)
        assert not worker.is_alive()
    return [jobs.wait(job_id, TIMEOUT).state for job_id in job_ids]


def open_site(db):
    conn = db.open()
    return conn, conn.root()['site']


# -- conflict storm --

@pytest.fixture(params=['file', 'demo', 'zeo'])
def storm_db(request, tmp_path):
    if request.param == 'file':
        yield request.getfixturevalue('file_db')
    elif request.param == 'demo':
        db = DB(DemoStorage())
        yield db
        db.close()
    else:
        yield request.getfixturevalue('zeo_db')


def test_storm_of_workers_and_jobs_on_one_object(storm_db):
    workers_count, units, jobs_count = 3, 15, 30
    site_oid = prepare(storm_db)
    patient = RetryPolicy(attempts=200, time_budget=TIMEOUT)
    start_together = threading.Barrier(workers_count)
    workers = [
        Numbered(storm_db, site_oid, 'site', 'editor', retry_policy=patient,
                 numbers=range(n * units, (n + 1) * units),
                 gate=lambda: start_together.wait(TIMEOUT), gate_at=0)
        for n in range(workers_count)]
    first_job = workers_count * units
    scheduler = BackgroundScheduler(max_workers=3)
    conn, site = open_site(storm_db)
    try:
        for worker in workers:
            worker.start()
        job_ids = [jobs.submit(apply, (first_job + n,), site=site,
                               after_commit=False, scheduler=scheduler,
                               retry_policy=patient, user='editor')
                   for n in range(jobs_count)]
        states = finish(workers, job_ids)
    finally:
        conn.close()
        scheduler.shutdown(wait=True)
    assert states == ['succeeded'] * jobs_count
    assert sum(w.status.units_failed for w in workers) == 0
    assert sum(w.status.units_done for w in workers) == workers_count * units
    check_each_applied_once(storm_db, first_job + jobs_count)


# -- ZEO outage --

class _WatchedPolicy(RetryPolicy):
    """Sets ``seen`` when a unit meets the disconnected server."""

    def __init__(self, **settings):
        super().__init__(**settings)
        self.seen = threading.Event()

    def isDisconnect(self, error):
        away = super().isDisconnect(error)
        if away:
            self.seen.set()
        return away


def _outage_policy():
    return _WatchedPolicy(
        attempts=200, disconnect_base_delay=0.05, disconnect_max_delay=0.5,
        disconnect_time_budget=4 * TIMEOUT)


def test_workers_and_jobs_ride_out_a_zeo_restart(zeo_server):
    # A short wait_timeout: a client call fails with ClientDisconnected
    # after a second instead of blocking, so units really meet the outage.
    db = zeo_server.db(wait_timeout=1)
    workers_count, units, half = 2, 10, 4
    site_oid = prepare(db)
    worker_policy, job_policy = _outage_policy(), _outage_policy()
    # The workers and the test meet here after `half` units, and the
    # workers go on once the server has been stopped.
    at_half = threading.Barrier(workers_count + 1)
    server_stopped = threading.Event()

    def gate():
        at_half.wait(TIMEOUT)
        assert server_stopped.wait(TIMEOUT)

    workers = [Numbered(db, site_oid, 'site', 'editor',
                        retry_policy=worker_policy, gate=gate, gate_at=half,
                        numbers=range(n * units, (n + 1) * units))
               for n in range(workers_count)]
    first_job = workers_count * units
    conn, site = open_site(db)
    scheduler = BackgroundScheduler(max_workers=2)

    def submit(number):
        return jobs.submit(apply, (number,), site=site, after_commit=False,
                           scheduler=scheduler, retry_policy=job_policy,
                           user='editor')
    try:
        for worker in workers:
            worker.start()
        job_ids = [submit(first_job + n) for n in range(3)]
        at_half.wait(TIMEOUT)
        assert all(jobs.wait(j, TIMEOUT).state == 'succeeded'
                   for j in job_ids)
        zeo_server.stop()
        server_stopped.set()
        job_ids += [submit(first_job + n) for n in range(3, 6)]
        # Both kinds of work meet the outage before the server returns.
        assert worker_policy.seen.wait(TIMEOUT)
        assert job_policy.seen.wait(TIMEOUT)
        zeo_server.start()   # same port, same file
        states = finish(workers, job_ids)
    finally:
        server_stopped.set()
        scheduler.shutdown(wait=True)
        transaction.abort()
        conn.close()
    assert states == ['succeeded'] * 6
    assert all(w.status.conflicts_retried > 0 for w in workers)
    check_each_applied_once(db, first_job + 6)
    db.close()


# -- security for jobs --

def publish_doc():
    """Publish 'doc' through a security proxy, as a view would."""
    site = hooks.getSite()
    publisher = ProxyFactory(Publisher(),
                             Checker({'publish': 'demo.Publish'}))
    publisher.publish(site['doc'])
    calls.append('published')


calls = []


def test_a_job_runs_with_its_users_permissions(mapping_db, security_policy):
    add_site(mapping_db, users=('editor', 'admin'))
    conn, site = open_site(mapping_db)
    try:
        denied = jobs.submit(publish_doc, site=site, user='editor',
                             after_commit=False)
        status = jobs.wait(denied, TIMEOUT)
        assert status.state == 'failed'
        assert status.error.startswith('Unauthorized')
        assert read(mapping_db, lambda r: r['site']['doc'].state) == 'DRAFT'

        allowed = jobs.submit(publish_doc, site=site, user='admin',
                              after_commit=False)
        assert jobs.wait(allowed, TIMEOUT).state == 'succeeded'
        assert read(mapping_db, lambda r: r['site']['doc'].state) == (
            'PUBLISHED')
    finally:
        conn.close()


def test_a_job_of_an_unknown_principal_never_runs(mapping_db,
                                                  security_policy):
    add_site(mapping_db, users=('editor', 'admin'))
    del calls[:]
    conn, site = open_site(mapping_db)
    try:
        job_id = jobs.submit(publish_doc, site=site, user='mallory',
                             after_commit=False)
        status = jobs.wait(job_id, TIMEOUT)
    finally:
        conn.close()
    assert status.state == 'failed'
    assert "PrincipalNotFound: principal 'mallory' is unknown" in \
        status.error
    assert calls == []   # never ran, not even unchecked
    assert read(mapping_db, lambda r: r['site']['doc'].state) == 'DRAFT'
