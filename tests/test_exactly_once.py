"""Exactly once: a commit whose outcome is unknown is never retried,
transient errors on the way in go through the retry policy, user code
cannot split a unit's transaction, and only public APIs are used."""
import logging
import pathlib
import re

import pytest
import transaction
from ZEO.Exceptions import ClientDisconnected
from zope.component import hooks

from cipher.background import RetryPolicy
from cipher.background import SYSTEM
from cipher.background import jobs
from cipher.background.context import UnitOfWork
from cipher.background.errors import OutcomeUnknown
from cipher.background.errors import UnitTransactionEnded
from cipher.background.scheduler import ImmediateScheduler
from cipher.background.testing import setUpLogging
from cipher.background.testing import tearDownLogging
from cipher.background.thread import BackgroundWorkerThread
from cipher.background.thread import log as thread_log
from helpers import add_site
from helpers import read


class FailsAfterTheVote:
    """A data manager that raises in tpc_finish, after the storage has
    finished its own commit (it sorts after ZODB's connections)."""

    def __init__(self, manager, error):
        self.transaction_manager = manager
        self.error = error

    def sortKey(self):
        return '~ fails after the vote'

    def tpc_finish(self, txn):
        raise self.error

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort


def _count_and_fail_after_the_vote():
    root = hooks.getSite()._p_jar.root()
    root['count'] = root.get('count', 0) + 1
    transaction.get().join(FailsAfterTheVote(
        transaction.manager, ClientDisconnected('server went away')))


def _policy(delays):
    return RetryPolicy(sleep=lambda seconds, event=None: delays.append(
        seconds) or False)


class Counting(BackgroundWorkerThread):
    units = 1

    def __init__(self, *args, work=_count_and_fail_after_the_vote, **kw):
        super().__init__(*args, **kw)
        self.work = work
        self.unknown = []

    def scheduleNextWork(self):
        self.units -= 1
        return self.units >= 0

    def doWork(self):
        self.work()

    def outcomeUnknown(self, error):
        self.unknown.append(error)


# -- 4: a failure after the vote is never retried --

def test_a_worker_unit_failing_after_the_vote_is_not_applied_twice(
        file_db):
    delays = []
    worker = Counting(file_db, add_site(file_db), 'site', 'editor',
                      retry_policy=_policy(delays))
    log = setUpLogging(thread_log)
    try:
        worker.runOnce()
    finally:
        tearDownLogging(thread_log)
    assert read(file_db, lambda r: r['count']) == 1  # committed, once
    assert delays == []  # no retry
    assert worker.status.units_outcome_unknown == 1
    assert worker.status.units_done == 0
    assert [type(e) for e in worker.unknown] == [OutcomeUnknown]
    assert isinstance(worker.unknown[0].error, ClientDisconnected)
    text = log.getvalue()
    assert text.count('failed after the vote') == 1
    assert 'not retried' in text


def test_a_job_failing_after_the_vote_ends_outcome_unknown(file_db, caplog):
    add_site(file_db)
    delays = []
    conn = file_db.open()
    try:
        with caplog.at_level(logging.CRITICAL, logger='cipher.background'):
            job_id = jobs.submit(
                _count_and_fail_after_the_vote, site=conn.root()['site'],
                user='editor', after_commit=False,
                scheduler=ImmediateScheduler(), retry_policy=_policy(delays))
        status = jobs.get_status(job_id)
    finally:
        conn.close()
    assert status.state == 'outcome-unknown'
    assert 'OutcomeUnknown' in status.error
    assert delays == []
    assert read(file_db, lambda r: r['count']) == 1
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL
                and r.name.startswith('cipher.background')]
    assert len(critical) == 1 and job_id in critical[0].getMessage()


# -- 5: transient errors on the way in use the same policy --

class _FlakyDB:
    """A database whose first ``failures`` opens fail as if the ZEO server
    were away."""

    def __init__(self, db, failures):
        self.db = db
        self.failures = failures

    def open(self, *args, **kw):
        if self.failures:
            self.failures -= 1
            raise ClientDisconnected('server away')
        return self.db.open(*args, **kw)


def test_a_disconnect_on_the_way_in_is_retried_by_the_policy(mapping_db):
    delays = []
    uow = UnitOfWork(_FlakyDB(mapping_db, 2), retry_policy=_policy(delays))

    def write():
        from cipher.background import current_connection
        current_connection().root()['x'] = 1

    uow.run(write)
    assert len(delays) == 2
    assert read(mapping_db, lambda r: r['x']) == 1


def test_a_worker_whose_site_load_meets_a_disconnect_retries(mapping_db):
    delays = []
    failures = [ClientDisconnected('away'), ClientDisconnected('away')]

    class Flaky(Counting):
        def getSite(self, connection):
            if failures:
                raise failures.pop()
            return super().getSite(connection)

    def count():
        root = hooks.getSite()._p_jar.root()
        root['count'] = root.get('count', 0) + 1

    worker = Flaky(mapping_db, add_site(mapping_db), 'site', 'editor',
                   retry_policy=_policy(delays), work=count)
    worker.runOnce()
    assert len(delays) == 2
    assert worker.status.units_done == 1
    assert worker.status.conflicts_retried == 2
    assert read(mapping_db, lambda r: r['count']) == 1


def test_a_job_submitted_during_an_outage_waits_it_out(mapping_db):
    delays = []

    def write():
        from cipher.background import current_connection
        current_connection().root()['job'] = 'done'

    job_id = jobs.submit(write, db=_FlakyDB(mapping_db, 3),
                         after_commit=False, scheduler=ImmediateScheduler(),
                         retry_policy=_policy(delays))
    status = jobs.get_status(job_id)
    assert status.state == 'succeeded'
    assert status.attempts == 4
    assert len(delays) == 3
    assert read(mapping_db, lambda r: r['job']) == 'done'


# -- 6: user code cannot commit or abort the unit's transaction --

@pytest.mark.parametrize('end', ['commit', 'abort', 'begin'])
def test_doWork_ending_the_transaction_itself_fails_and_commits_nothing(
        mapping_db, end):
    def work():
        root = hooks.getSite()._p_jar.root()
        root['count'] = root.get('count', 0) + 1
        try:
            getattr(transaction, end)()
        except UnitTransactionEnded:
            raise
        root['after'] = True

    worker = Counting(mapping_db, add_site(mapping_db), 'site', 'editor',
                      work=work)
    worker.runOnce()
    assert worker.status.units_failed == 1
    assert 'UnitTransactionEnded' in worker.status.last_error
    assert read(mapping_db, lambda r: ('count' in r, 'after' in r)) == (
        False, False)


def test_doWork_may_note_and_use_savepoints_of_the_units_transaction(
        file_db):
    def work():
        root = hooks.getSite()._p_jar.root()
        txn = transaction.get()
        txn.note('indexed 3 documents')
        root['kept'] = 1
        savepoint = transaction.savepoint()
        root['undone'] = 1
        savepoint.rollback()

    worker = Counting(file_db, add_site(file_db), 'site', 'editor',
                      work=work)
    worker.runOnce()
    assert worker.status.units_done == 1
    assert read(file_db, lambda r: ('kept' in r, 'undone' in r)) == (
        True, False)
    last = list(file_db.storage.iterator())[-1]
    assert last.description.decode().endswith('indexed 3 documents')
    assert last.user.decode() == '/ editor'


# -- 7: public APIs only --

_PRIVATE = re.compile(
    r'\._txn\b|\._resources\b|_register_atexit|thread_local|'
    r'manager\.manager\s*=|_security_local|\bsys\.(stdout|stderr)\s*=')


def test_the_library_uses_only_public_apis_of_its_dependencies():
    source = pathlib.Path(__file__).parent.parent / 'src' / 'cipher'
    offenders = []
    for path in source.rglob('*.py'):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _PRIVATE.search(line) and not line.lstrip().startswith('#'):
                offenders.append('%s:%d: %s' % (path.name, number, line))
    assert offenders == []


def test_system_units_are_noted_with_the_system_user(mapping_db):
    worker = Counting(mapping_db, add_site(mapping_db), 'site', SYSTEM,
                      work=lambda: None)
    worker.runOnce()
    assert worker.status.units_done == 1


def test_a_job_that_swallows_the_refused_commit_still_fails_clearly(
        mapping_db):
    def sneaky():
        from cipher.background import current_connection
        current_connection().root()['sneaky'] = True
        try:
            transaction.commit()
        except UnitTransactionEnded:
            pass  # and carry on as if it had worked

    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        job_id = jobs.submit(sneaky, site=conn.root()['site'], user='editor',
                             after_commit=False,
                             scheduler=ImmediateScheduler())
    finally:
        conn.close()
    status = jobs.get_status(job_id)
    assert status.state == 'failed'
    assert status.error.startswith('UnitTransactionEnded')
    assert read(mapping_db, lambda r: 'sneaky' in r) is False
