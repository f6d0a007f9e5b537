"""Durable jobs in one process: enqueued in the caller's transaction,
run by a QueueRunner, exactly once, with the caller's site and user."""
import functools
import threading
import time

import pytest
import transaction
from zope.component.hooks import setSite

from cipher.background import ArgumentTypeError
from cipher.background import ConfigurationError
from cipher.background import SYSTEM
from cipher.background import cancel
from cipher.background import get_progress
from cipher.background import get_status
from cipher.background import wait
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.context import Participation
from cipher.background.demo import make_site
from cipher.background.durable import enqueue
from cipher.background.durable import enqueue_call
from cipher.background.durable import schedule
from cipher.background.durable import unschedule
from cipher.background.queuerunner import QueueRunner
from cipher.background.queuestore import ROOT_KEY
from cipher.background.queuestore import get_queue
import durable_jobs
from helpers import TIMEOUT
from helpers import read


@pytest.fixture
def site(file_db):
    conn = file_db.open()
    site = make_site(conn.root(), 'site', users=('editor',))
    transaction.commit()
    yield site
    transaction.abort()
    conn.close()


def as_editor(site, fn):
    """``fn()`` in the site as editor, as a request would run it."""
    setSite(site)
    try:
        principal = site.getSiteManager()['default']['authentication'] \
            .getPrincipal('editor')
        with ZopeInteraction(Participation(principal)):
            return fn()
    finally:
        setSite(None)


def counters(db):
    return read(db, lambda root: {
        name: counter.value
        for name, counter in root.get('counters', {}).items()})


def test_a_job_exists_only_if_the_callers_transaction_commits(file_db,
                                                              site):
    as_editor(site, lambda: enqueue(durable_jobs.count, 'dropped'))
    transaction.abort()
    assert read(file_db, lambda root: ROOT_KEY in root) is False
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'kept'))
    assert get_status(job_id).state == 'unknown'  # not before the commit
    transaction.commit()
    assert get_status(job_id).state == 'queued'
    runner = QueueRunner(file_db)
    assert runner.run_pending() == 1
    status = get_status(job_id)
    assert (status.state, status.result, status.attempts) == (
        'succeeded', 1, 1)
    assert status.principal == 'editor'
    assert counters(file_db) == {'kept': 1}
    assert runner.run_pending() == 0  # never twice


def test_the_job_runs_as_the_caller_on_the_callers_site(file_db, site):
    job_id = as_editor(site, lambda: enqueue(durable_jobs.who_and_where,
                                             site['doc']))
    transaction.commit()
    QueueRunner(file_db).run_pending()
    assert get_status(job_id).result == (['editor'], 'site',
                                         'Annual report')
    run = [record for record in file_db.storage.iterator()
           if 'durable_jobs.who_and_where' in record.description.decode()]
    assert len(run) == 1
    assert run[0].user.decode().endswith('editor')


def test_a_failing_job_is_attempted_again_then_fails(file_db, site):
    job_id = as_editor(site, lambda: enqueue_call(
        durable_jobs.fail, ('broken',), attempts=3, backoff=0))
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 3
    status = get_status(job_id)
    assert (status.state, status.attempts) == ('failed', 3)
    assert status.error == 'RuntimeError: broken'
    assert 'Traceback' in status.traceback and 'fail' in status.traceback


def test_a_retry_waits_its_backoff_in_the_queue_not_in_a_thread(file_db,
                                                                site):
    job_id = as_editor(site, lambda: enqueue_call(
        durable_jobs.fail, ('later',), attempts=2, backoff=3600))
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 1
    status = get_status(job_id)
    assert (status.state, status.attempts) == ('queued', 1)
    assert status.error == 'RuntimeError: later'


def test_a_delayed_job_waits(file_db, site):
    job_id = as_editor(site, lambda: enqueue_call(
        durable_jobs.count, ('delayed',), delay=3600))
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 0
    assert get_status(job_id).state == 'queued'
    assert get_progress(job_id) == (-1, None)


def test_a_cancelled_waiting_job_never_runs(file_db, site):
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'no'))
    transaction.commit()
    assert cancel(job_id) is True
    assert QueueRunner(file_db).run_pending() == 0
    assert get_status(job_id).state == 'cancelled'
    assert counters(file_db) == {}
    assert cancel(job_id) is False  # finished


def test_a_running_job_is_cancelled_at_its_next_check(file_db, site):
    durable_jobs.started.clear()
    job_id = as_editor(site, lambda: enqueue(durable_jobs.wait_for_cancel))
    transaction.commit()
    runner = QueueRunner(file_db, threads=1).start()
    try:
        assert durable_jobs.started.wait(TIMEOUT)
        assert cancel(job_id) is True
        status = wait(job_id, TIMEOUT)
    finally:
        assert runner.stop(TIMEOUT)
    assert status.state == 'cancelled'


def test_a_job_whose_runner_died_is_run_again_once(file_db, site):
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'once'))
    transaction.commit()
    dead = QueueRunner(file_db)
    assert dead._claim()[0].id == job_id  # claimed; then the process died
    assert QueueRunner(file_db).run_pending() == 0  # its lease holds
    with file_db.transaction() as conn:  # the lease runs out
        queue = get_queue(conn.root())
        queue.leases[job_id] = queue.jobs[job_id].lease_end = 0
    assert QueueRunner(file_db).run_pending() == 1
    status = get_status(job_id)
    assert (status.state, status.attempts) == ('succeeded', 2)
    assert counters(file_db) == {'once': 1}


def test_a_jobs_transaction_writes_only_its_record_and_its_work(
        file_db, site):
    # Runners finishing side by side share no object in the transaction
    # of a job's work, so they cannot make it conflict and run again.
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'x'))
    transaction.commit()
    QueueRunner(file_db).run_pending()
    written = [{data.oid for data in record}
               for record in file_db.storage.iterator()
               if 'durable_jobs.count' in record.description.decode()]
    record, work = read(file_db, lambda root: (
        get_queue(root).jobs[job_id]._p_oid, {
            root._p_oid, root['counters']._p_oid,
            root['counters']['x']._p_oid}))
    assert written == [work | {record}]
    assert read(file_db, lambda root: (
        list(get_queue(root).finished.values()),
        len(get_queue(root).leases))) == ([job_id], 0)


def test_finished_jobs_are_filed_by_the_next_claim(file_db, site):
    # Filing costs no transaction of its own while there is work.
    ids = [as_editor(site, lambda n=n: enqueue(durable_jobs.count, str(n)))
           for n in range(3)]
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 3
    notes = [record.description.decode()
             for record in file_db.storage.iterator()]
    assert len([note for note in notes if ': claim in' in note]) == 4
    assert not [note for note in notes if ': file ' in note]
    assert read(file_db, lambda root: (
        sorted(get_queue(root).finished.values()),
        len(get_queue(root).leases))) == (sorted(ids), 0)


def test_a_job_whose_runner_died_after_it_succeeded_is_filed(file_db,
                                                             site):
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'x'))
    transaction.commit()
    dying = QueueRunner(file_db)
    dying._run(dying._claim()[0])  # and the process died before filing it
    assert get_status(job_id).state == 'succeeded'
    assert read(file_db, lambda root: (
        len(get_queue(root).finished),
        len(get_queue(root).leased()))) == (0, 1)
    with file_db.transaction() as conn:  # the lease runs out
        get_queue(conn.root()).leases[job_id] = 0
    assert QueueRunner(file_db).run_pending() == 0  # nothing to run again
    assert read(file_db, lambda root: (
        list(get_queue(root).finished.values()),
        len(get_queue(root).leases))) == ([job_id], 0)
    assert get_status(job_id).state == 'succeeded'
    assert counters(file_db) == {'x': 1}


def test_a_running_jobs_lease_is_renewed_so_it_runs_once(file_db, site):
    durable_jobs.started.clear()
    durable_jobs.release.clear()
    job_id = as_editor(site, lambda: enqueue_call(
        durable_jobs.held, ('long',), lease=0.3))
    transaction.commit()
    runner = QueueRunner(file_db, threads=1, poll=0.05).start()
    try:
        assert durable_jobs.started.wait(TIMEOUT)
        first_end = lease_end(file_db, job_id)
        deadline = time.monotonic() + TIMEOUT
        # Until the first lease is long over, and renewed since.
        while time.time() < first_end + 0.3 or \
                lease_end(file_db, job_id) <= first_end + 0.3:
            assert time.monotonic() < deadline, 'the lease was not renewed'
            time.sleep(0.02)  # the keeper renews it every 0.1 s
        assert QueueRunner(file_db).run_pending() == 0  # still held
    finally:
        durable_jobs.release.set()
        assert runner.stop(TIMEOUT)
    status = get_status(job_id)
    assert (status.state, status.attempts) == ('succeeded', 1)
    assert counters(file_db) == {'long': 1}
    assert read(file_db, lambda root: len(get_queue(root).leases)) == 0


def test_one_thread_keeps_the_leases_of_the_process(file_db, site):
    del durable_jobs.lease_threads[:]
    ids = [as_editor(site, lambda: enqueue_call(
        durable_jobs.note_lease_threads)) for _ in range(3)]
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 3
    assert [get_status(job_id).result for job_id in ids] == [1, 1, 1]
    first = durable_jobs.lease_threads[0]
    assert all(thread is first for thread in durable_jobs.lease_threads)


def lease_end(db, job_id):
    return read(db, lambda root: get_queue(root).leases[job_id])


@pytest.mark.parametrize('fn', [
    lambda: None,
    functools.partial(durable_jobs.count, 'x'),
    durable_jobs.Plain().run,
])
def test_callables_another_process_cannot_find_are_refused(file_db, site,
                                                           fn):
    def nested():
        pass
    for refused in (fn, nested):
        with pytest.raises(ArgumentTypeError, match='run by name'):
            as_editor(site, lambda: enqueue(refused))
    transaction.commit()
    assert read(file_db, lambda root: ROOT_KEY in root) is False


def test_arguments_must_pickle(file_db, site):
    with pytest.raises(ArgumentTypeError, match='must be picklable'):
        as_editor(site, lambda: enqueue(durable_jobs.count,
                                        durable_jobs.threading.Lock()))


def test_without_a_stored_object_a_connection_is_needed(file_db):
    with pytest.raises(ConfigurationError, match='pass connection='):
        enqueue_call(durable_jobs.count, ('x',), user=SYSTEM)


def test_a_method_of_a_persistent_object_runs_on_that_object(file_db,
                                                             site):
    conn = site._p_jar
    conn.root()['counter'] = counter = durable_jobs.Counter()
    transaction.commit()
    job_id = as_editor(site, lambda: enqueue(counter.add, 5))
    transaction.commit()
    QueueRunner(file_db).run_pending()
    assert get_status(job_id).result == 5
    assert read(file_db, lambda root: root['counter'].value) == 5


def test_a_result_that_cannot_be_stored_fails_the_job(file_db, site):
    job_id = as_editor(site, lambda: enqueue_call(
        durable_jobs.returns_unpicklable, attempts=1))
    transaction.commit()
    QueueRunner(file_db).run_pending()
    status = get_status(job_id)
    assert status.state == 'failed'
    assert 'pickle' in status.error


def test_finished_records_are_pruned_by_count_and_age(file_db, site):
    ids = [as_editor(site, lambda n=n: enqueue(durable_jobs.count, str(n)))
           for n in range(5)]
    transaction.commit()
    runner = QueueRunner(file_db, keep_count=2)
    assert runner.run_pending() == 5
    assert runner.prune() == 3
    assert sorted(get_status(job_id).state for job_id in ids) == [
        'succeeded'] * 2 + ['unknown'] * 3
    assert QueueRunner(file_db, keep_seconds=0).prune() == 2
    assert read(file_db, lambda root: (
        len(get_queue(root).jobs), len(get_queue(root).finished))) == (0, 0)


def test_a_running_job_that_lost_its_lease_entry_is_taken_again(
        file_db, site, caplog):
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'lost'))
    transaction.commit()
    QueueRunner(file_db)._claim()  # its runner then died
    with file_db.transaction() as conn:  # and its lease entry was lost
        queue = get_queue(conn.root())
        del queue.leases[job_id]
        queue.jobs[job_id].lease_end = 0
    runner = QueueRunner(file_db)
    assert runner.run_pending() == 0  # nothing says it is due
    runner.prune()
    assert 'was running with no lease entry' in caplog.text
    assert runner.run_pending() == 1
    status = get_status(job_id)
    assert (status.state, status.attempts) == ('succeeded', 2)
    assert counters(file_db) == {'lost': 1}


def test_a_claim_committed_without_its_lease_entries_is_repaired(
        file_db, site, caplog):
    # What RelStorage 4.3 on SQLite commits after a claim whose vote failed
    # on a read conflict: the claim's records, running, but neither its
    # lease entries nor its pulls from the pending queue.
    ended, later = [as_editor(site, lambda name=name: enqueue(
        durable_jobs.count, name)) for name in ('ended', 'later')]
    transaction.commit()
    with file_db.transaction() as conn:
        queue = get_queue(conn.root())
        for job_id, lease_end in ((ended, 0.0), (later, time.time() + 3600)):
            job = queue.jobs[job_id]
            job.state, job.owner, job.attempts = 'running', 'dead:1:x', 1
            job.lease_end = lease_end
    assert QueueRunner(file_db).run_pending() == 1  # its lease ended
    assert 'was running with no lease entry' in caplog.text
    assert (get_status(ended).state, get_status(ended).attempts) == (
        'succeeded', 2)
    assert counters(file_db) == {'ended': 1}
    # The other waits for the end of its lease, in the leases tree again.
    lease_end = read(file_db,
                     lambda root: get_queue(root).jobs[later].lease_end)
    assert read(file_db, lambda root: get_queue(root).leased()) == {
        later: lease_end}
    assert get_status(later).state == 'running'


def test_a_job_cancelled_then_run_again_runs_once_per_attempt(file_db,
                                                              site):
    from cipher.background.durable import requeue
    job_id = as_editor(site, lambda: enqueue_call(
        durable_jobs.fail, ('no',), attempts=2, backoff=3600))
    transaction.commit()
    assert cancel(job_id) is True  # its id stays in the pending queue
    assert requeue(job_id) is True
    assert QueueRunner(file_db).run_pending() == 1  # not the old entry too
    status = get_status(job_id)
    assert (status.state, status.attempts) == ('queued', 1)  # its backoff
    assert requeue(job_id) is False  # it waits: nothing to run again


def test_pruning_goes_in_small_transactions(file_db, site, monkeypatch):
    # One large transaction would change many buckets of the jobs tree
    # at once and make the requests enqueuing meanwhile conflict.
    from cipher.background import queuerunner
    monkeypatch.setattr(queuerunner, 'PRUNE_BATCH', 2)
    for n in range(5):
        as_editor(site, lambda n=n: enqueue(durable_jobs.count, str(n)))
    transaction.commit()
    runner = QueueRunner(file_db, keep_count=0)
    assert runner.run_pending() == 5
    assert runner.prune() == 5
    prunes = [len(list(record)) for record in file_db.storage.iterator()
              if 'prune in queue' in record.description.decode()]
    assert len(prunes) == 3
    assert read(file_db, lambda root: (
        len(get_queue(root).jobs), len(get_queue(root).finished))) == (0, 0)


# -- schedules --

def scheduled_jobs(db):
    return read(db, lambda root: sorted(
        (job.slot, job.state) for job in get_queue(root).jobs.values()
        if job.schedule is not None))


def test_a_schedule_fires_each_slot_once(file_db, site):
    start = time.time() - 1
    as_editor(site, lambda: schedule(durable_jobs.count, ('tick',),
                                     every=3600, start_at=start))
    transaction.commit()
    runner = QueueRunner(file_db)
    assert runner.run_pending() == 1
    assert runner.run_pending() == 0  # the next slot is an hour away
    assert scheduled_jobs(file_db) == [(start, 'succeeded')]
    assert counters(file_db) == {'tick': 1}
    next_run = read(file_db, lambda root: get_queue(
        root).schedules['durable_jobs.count'].next_run)
    assert next_run == start + 3600


def test_missed_slots_fire_once_together(file_db, site):
    start = time.time() - 10.5
    as_editor(site, lambda: schedule(durable_jobs.count, ('late',),
                                     every=1, start_at=start, name='late'))
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 1
    assert counters(file_db) == {'late': 1}
    next_run = read(file_db, lambda root: get_queue(
        root).schedules['late'].next_run)
    assert next_run == start + 11 and next_run > time.time()


def test_a_cron_schedule_waits_for_its_time(file_db, site):
    as_editor(site, lambda: schedule(durable_jobs.count, ('cron',),
                                     cron='*/5 * * * *', name='cron'))
    transaction.commit()
    next_run = read(file_db, lambda root: get_queue(
        root).schedules['cron'].next_run)
    assert next_run % 300 == 0 and 0 < next_run - time.time() <= 300
    assert QueueRunner(file_db).run_pending() == 0


@pytest.mark.parametrize('kwargs, message', [
    (dict(), 'give every= .* or cron='),
    (dict(every=1, cron='* * * * *'), 'give every= .* or cron='),
    (dict(every=0), 'every must be from 0.01'),
    (dict(every=1e-300), 'every must be from 0.01'),
    (dict(every=float('nan')), 'every must be a number of seconds'),
    (dict(cron=5), 'cron must be a str'),
    (dict(cron='every minute'), "cron expression 'every minute'"),
    (dict(cron='* * * * *', start_at=0), 'start_at goes with every='),
])
def test_bad_schedules_are_refused(file_db, site, kwargs, message):
    with pytest.raises((ArgumentTypeError, ConfigurationError),
                       match=message):
        as_editor(site, lambda: schedule(durable_jobs.count, ('x',),
                                         **kwargs))


def test_unschedule_removes_it(file_db, site):
    as_editor(site, lambda: schedule(durable_jobs.count, ('x',), every=60,
                                     name='gone'))
    transaction.commit()
    assert unschedule('gone', site._p_jar) is True
    assert unschedule('gone', site._p_jar) is False
    transaction.commit()
    assert read(file_db, lambda root: list(get_queue(root).schedules)) == []


def test_a_backlog_beyond_the_pending_limit_runs_in_order_once(
        file_db, site, monkeypatch):
    import random
    from cipher.background import queuestore
    from cipher.background.queuestore import PENDING_LIMIT
    monkeypatch.setattr(queuestore, 'random', random.Random(7))
    count = PENDING_LIMIT * 2 + 50
    ids = as_editor(site, lambda: [
        enqueue(durable_jobs.count, 'n%03d' % n) for n in range(count)])
    transaction.commit()
    sizes = read(file_db, lambda root: (len(get_queue(root).pending),
                                        len(get_queue(root).backlog)))
    assert sizes == (PENDING_LIMIT, count - PENDING_LIMIT)
    assert QueueRunner(file_db).run_pending() == count
    assert counters(file_db) == {'n%03d' % n: 1 for n in range(count)}
    started = sorted(ids, key=lambda job_id: get_status(job_id).started)
    # Near first in, first out: a job is taken among the 8 oldest, so the
    # first of the backlog start after most of what was pending.
    places = [ids.index(job_id) for job_id in started]
    assert max(abs(place - n) for n, place in enumerate(places)) < 60
    assert sum(abs(place - n) for n, place in enumerate(places)) \
        / count < 8
    assert read(file_db, lambda root: (len(get_queue(root).pending),
                                       len(get_queue(root).backlog))) == (
        0, 0)


def test_a_site_made_in_the_same_transaction_is_the_jobs(file_db, site):
    root = site._p_jar.root()
    new_site = make_site(root, 'fresh', users=('editor',))
    assert new_site._p_jar is None  # not stored yet
    job_id = as_editor(new_site, lambda: enqueue(durable_jobs.who_and_where,
                                                 new_site['doc']))
    transaction.commit()
    QueueRunner(file_db).run_pending()
    assert get_status(job_id).result == (['editor'], 'fresh',
                                         'Annual report')


# -- what an attack found --

def test_a_job_that_exits_fails_and_the_runner_goes_on(file_db, site):
    exiting = as_editor(site, lambda: enqueue_call(durable_jobs.exits,
                                                   attempts=1))
    kept = as_editor(site, lambda: enqueue(durable_jobs.count, 'after'))
    transaction.commit()
    runner = QueueRunner(file_db, threads=1).start()
    try:
        assert wait(kept, TIMEOUT).state == 'succeeded'
        status = wait(exiting, TIMEOUT)
        assert runner.is_alive()
    finally:
        assert runner.stop(TIMEOUT)
    assert (status.state, status.attempts) == ('failed', 1)
    assert status.error.startswith('SystemExit')


def test_cancelling_a_running_job_never_runs_it_twice(file_db, site):
    durable_jobs.started.clear()
    durable_jobs.release.clear()
    del durable_jobs.calls[:]
    job_id = as_editor(site, lambda: enqueue(durable_jobs.ignores_cancel))
    transaction.commit()
    runner = QueueRunner(file_db, threads=1).start()
    try:
        assert durable_jobs.started.wait(TIMEOUT)
        assert cancel(job_id) is True
        durable_jobs.release.set()
        status = wait(job_id, TIMEOUT)
    finally:
        assert runner.stop(TIMEOUT)
    assert status.state == 'cancelled'  # its effects undone
    assert durable_jobs.calls == ['ran']  # once
    assert counters(file_db) == {}


def test_declaring_a_schedule_again_keeps_its_slot(file_db, site):
    for _ in range(3):  # three start-ups
        as_editor(site, lambda: schedule(durable_jobs.count, ('hourly',),
                                         every=3600, name='hourly'))
        transaction.commit()
        QueueRunner(file_db).run_pending()
    assert counters(file_db) == {'hourly': 1}


def test_a_broken_schedule_never_blocks_the_queue(file_db, site, logged):
    as_editor(site, lambda: schedule(durable_jobs.count, ('x',), every=60,
                                     name='broken'))
    transaction.commit()
    with file_db.transaction() as conn:  # as an old release might leave it
        broken = get_queue(conn.root()).schedules['broken']
        broken.every, broken.next_run = float('nan'), 0
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'ok'))
    transaction.commit()
    QueueRunner(file_db).run_pending()
    assert get_status(job_id).state == 'succeeded'


def test_what_another_process_cannot_load_is_refused(file_db, site):
    import __main__
    main_fn = type(lambda: None)(durable_jobs.noop.__code__, {}, 'main_fn')
    main_fn.__module__ = '__main__'
    __main__.main_fn = main_fn
    try:
        with pytest.raises(ArgumentTypeError, match='__main__'):
            as_editor(site, lambda: enqueue(main_fn))
    finally:
        del __main__.main_fn
    with pytest.raises(ArgumentTypeError, match='lives in __main__'):
        as_editor(site, lambda: enqueue(durable_jobs.count,
                                        durable_jobs.main_instance()))
    for fn in (durable_jobs.generator, durable_jobs.coroutine):
        with pytest.raises(ArgumentTypeError, match='generator or coroutine'):
            as_editor(site, lambda: enqueue(fn))


def test_objects_of_two_connections_are_refused(file_db, site):
    other = file_db.open()
    try:
        with pytest.raises(ConfigurationError, match='different connections'):
            as_editor(site, lambda: enqueue(durable_jobs.who_and_where,
                                            other.root()['site']['doc']))
    finally:
        other.close()


def test_two_databases_of_one_name_both_answer(tmp_path, site, file_db):
    from ZODB import DB
    from ZODB.FileStorage import FileStorage
    second = DB(FileStorage(str(tmp_path / 'second.fs')))
    try:
        conn = second.open()
        conn.root()['x'] = durable_jobs.Counter()
        transaction.commit()
        first_id = as_editor(site, lambda: enqueue(durable_jobs.count, '1'))
        transaction.commit()
        second_id = enqueue_call(durable_jobs.count, ('2',), user=SYSTEM,
                                 connection=conn)
        transaction.commit()
        conn.close()
        assert first_id.split('@')[1] == second_id.split('@')[1]
        assert get_status(first_id).state == 'queued'
        assert get_status(second_id).state == 'queued'
        assert cancel(first_id) is True
        assert get_status(first_id).state == 'cancelled'
    finally:
        second.close()


@pytest.mark.parametrize('kwargs, message', [
    (dict(timeout=float('nan')), 'timeout must be'),
    (dict(timeout='1'), 'timeout must be'),
    (dict(timeout=-1), 'timeout must be'),
])
def test_wait_refuses_bad_timeouts(file_db, site, kwargs, message):
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'w'))
    transaction.commit()
    with pytest.raises(ArgumentTypeError, match=message):
        wait(job_id, **kwargs)


def test_wait_reads_again_when_a_job_settles_during_its_read(
        file_db, site, monkeypatch):
    from cipher.background import durable
    job_id = as_editor(site, lambda: enqueue(durable_jobs.count, 'w'))
    transaction.commit()
    real_get_status = durable.get_status

    def read_while_it_runs(job_id):
        status = real_get_status(job_id)
        if status.state == 'queued':  # settled (and notified) meanwhile
            assert QueueRunner(file_db).run_pending() == 1
        return status

    waits = []

    class Recording(threading.Condition):
        def wait(self, timeout=None):
            waits.append(timeout)
            return super().wait(timeout)

    monkeypatch.setattr(durable, 'get_status', read_while_it_runs)
    monkeypatch.setattr(durable, '_settled', Recording())
    assert durable.wait(job_id, poll=5).state == 'succeeded'
    assert waits == []  # it read again at once, not after the poll


def test_unschedule_refuses_what_is_no_name_or_connection(site):
    with pytest.raises(ArgumentTypeError, match='unschedule'):
        unschedule('x', None)
    with pytest.raises(ArgumentTypeError, match='unschedule'):
        unschedule(5, site._p_jar)


def test_a_runner_starts_once_and_checks_its_options(file_db):
    from cipher.background import AlreadyStarted
    runner = QueueRunner(file_db, threads=1).start()
    try:
        with pytest.raises(AlreadyStarted):
            runner.start()
    finally:
        assert runner.stop(TIMEOUT)
    with pytest.raises(AlreadyStarted):
        runner.start()
    for kwargs in (dict(queue=None), dict(queue=5), dict(keep_seconds='x'),
                   dict(keep_count=-1), dict(keep_seconds=float('nan'))):
        with pytest.raises(ArgumentTypeError):
            QueueRunner(file_db, **kwargs)


def test_a_batch_claimed_is_run_or_given_back(file_db, site):
    ids = as_editor(site, lambda: [enqueue(durable_jobs.count, 'b%d' % n)
                                   for n in range(5)])
    transaction.commit()
    runner = QueueRunner(file_db, threads=2)
    claims = runner._claim(3)  # one transaction, three leases
    assert len(claims) == 3
    runner._ready.extend(claims)
    runner._give_back_ready()  # stopping: back to the queue, uncounted
    assert runner.run_one(batch=2)  # claims two, runs one, keeps one
    assert len(runner._ready) == 1
    assert runner.run_pending() == 4
    statuses = [get_status(job_id) for job_id in ids]
    assert {(s.state, s.attempts) for s in statuses} == {('succeeded', 1)}
    assert counters(file_db) == {'b%d' % n: 1 for n in range(5)}
