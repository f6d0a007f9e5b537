"""Durable jobs across processes: `cipher-background jobs` processes on a
ZEO server and on RelStorage (SQLite) run every job exactly once, one of
them SIGKILLed mid-run, and fire each slot of a schedule once; status and
results are read from another process."""
import os
import signal
import subprocess
import sys
import time

import pytest
import transaction
import ZEO
import zodburi
from ZODB import DB

from cipher.background import get_status
from cipher.background.demo import make_site
from cipher.background.durable import enqueue_call
from cipher.background.durable import register_database
from cipher.background.durable import schedule
from cipher.background.queuestore import get_queue
from cipher.background.scheduler import new_id
from cipher.background.security import SYSTEM
import durable_jobs
import postgres as postgres_server
from helpers import SlowReplies
from helpers import TIMEOUT
from helpers import read

HERE = os.path.dirname(os.path.abspath(__file__))
JOBS = 60
LEASE = 3


@pytest.fixture(scope='module')
def postgres():
    if postgres_server.bindir() is None:
        pytest.skip('PostgreSQL is not installed (.ci/run installs it: '
                    'apt-get install postgresql)')
    server = postgres_server.PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=['zeo', 'sqlite', 'postgresql'])
def storage(request, tmp_path):
    """(URI, DB) of a storage that several processes share: a ZEO server,
    or RelStorage on SQLite or on PostgreSQL."""
    if request.param == 'zeo':
        server = request.getfixturevalue('zeo_server')
        uri = 'zeo://127.0.0.1:%d' % server.port
    elif request.param == 'sqlite':
        uri = 'sqlite://?data_dir=%s' % (tmp_path / 'sqlite')
    else:
        uri = request.getfixturevalue('postgres').create_database(
            'test_%s' % new_id()[:12])
    factory, kwargs = zodburi.resolve_uri(uri)
    db = DB(factory(), **kwargs)
    yield uri, db
    db.close()


def start_runner(uri):
    return subprocess.Popen(
        [sys.executable, '-m', 'cipher.background', 'jobs', '--zodb', uri,
         '--threads', '2', '--poll', '0.1'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def states(db):
    return read(db, lambda root: sorted(
        job.state for job in get_queue(root).jobs.values()))


@pytest.mark.timeout(6 * TIMEOUT)
def test_jobs_run_exactly_once_with_a_runner_killed(storage):
    uri, db = storage
    conn = db.open()
    site = make_site(conn.root(), 'site')
    transaction.commit()
    ids = [enqueue_call(durable_jobs.slow_count, ('job-%d' % n, 0.2),
                        site=site, user=SYSTEM, lease=LEASE)
           for n in range(JOBS)]
    transaction.commit()
    conn.close()
    runners = [start_runner(uri) for _ in range(3)]
    try:
        deadline = time.monotonic() + 4 * TIMEOUT
        mark = ':%d:' % runners[0].pid
        held = []
        while not held:  # wait until the first runner holds a lease
            assert time.monotonic() < deadline, states(db)
            held = read(db, lambda root: [
                job.id for job in get_queue(root).jobs.values()
                if job.state == 'running' and mark in (job.owner or '')])
            time.sleep(0.01)  # other processes work; we look now and then
        runners[0].send_signal(signal.SIGKILL)  # mid-run, leases held
        runners[0].wait(TIMEOUT)
        while states(db).count('succeeded') < JOBS:
            assert time.monotonic() < deadline, states(db)
            time.sleep(0.05)
        for runner in runners[1:]:
            runner.send_signal(signal.SIGTERM)
        outputs = [runner.communicate(timeout=TIMEOUT)
                   for runner in runners[1:]]
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
    for runner, (out, err) in zip(runners[1:], outputs):
        assert runner.returncode == 0, err
        assert 'Traceback' not in err, err[-3000:]
    counts = read(db, lambda root: {
        name: counter.value for name, counter in root['counters'].items()})
    assert counts == {'job-%d' % n: 1 for n in range(JOBS)}
    statuses = [get_status(job_id) for job_id in ids]  # from here
    assert {status.state for status in statuses} == {'succeeded'}
    assert sorted(status.result for status in statuses) == [1] * JOBS
    # What the killed runner held was taken again when its lease ran out
    # (unless its commit made it first), and still applied once.
    assert {status.attempts for status in statuses} <= {1, 2}


@pytest.mark.timeout(6 * TIMEOUT)
def test_a_schedule_fires_each_slot_once_across_processes(storage):
    uri, db = storage
    conn = db.open()
    site = make_site(conn.root(), 'site')
    transaction.commit()
    start = time.time() + 0.5
    schedule(durable_jobs.count_this_job, every=0.25, start_at=start,
             site=site, user=SYSTEM, name='tick')
    transaction.commit()
    conn.close()
    runners = [start_runner(uri) for _ in range(3)]
    try:
        deadline = time.monotonic() + 4 * TIMEOUT
        while len(fired(db)) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.05)  # other processes work; we look now and then
    finally:
        for runner in runners:
            runner.send_signal(signal.SIGTERM)
        for runner in runners:
            runner.communicate(timeout=TIMEOUT)
    slots = fired(db)
    assert len(set(slot for slot, _ in slots)) == len(slots)  # none twice
    assert all((slot - start) / 0.25 == round((slot - start) / 0.25)
               for slot, _ in slots)
    counts = read(db, lambda root: dict(
        (name, counter.value) for name, counter in root['counters'].items()))
    done = [job_id for _, job_id in slots
            if get_status(job_id).state == 'succeeded']
    assert len(done) >= 6
    assert all(counts[job_id] == 1 for job_id in done)


def fired(db):
    """(slot, job id) of the jobs the schedule made."""
    return read(db, lambda root: sorted(
        (job.slot, job.id) for job in get_queue(root).jobs.values()
        if job.schedule == 'tick'))


def test_a_job_committed_by_another_zeo_client_is_known_at_once(
        zeo_server):
    # ZEO tells a client of another client's commit asynchronously, so an
    # id handed over at once (a response, a message) may reach a process
    # before the commit does: here every reply of the server reaches this
    # process 0.1 s late.  Without the catch-up in durable._look, each of
    # these jobs would be "unknown" here.
    link = SlowReplies(zeo_server.port, delay=0.1)
    db = ZEO.DB(('127.0.0.1', link.port), wait_timeout=TIMEOUT)
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, 'enqueue_child.py'),
         str(zeo_server.port), '10'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    states = []
    try:
        register_database(db)
        read(db, lambda root: None)  # connected, with the root cached
        for job_id in child.stdout:
            states.append(get_status(job_id.strip()).state)
            child.stdin.write('next\n')
            child.stdin.flush()
    finally:
        child.stdin.close()
        assert child.wait(TIMEOUT) == 0
        db.close()
        link.close()
    assert states == ['queued'] * 10
