"""The worker status record: changed in place, read as snapshots."""
import datetime

from zope.interface.verify import verifyObject

from cipher.background.interfaces import IWorkerStatus
from cipher.background.workerstatus import StatusRecord
from cipher.background.workerstatus import WorkerStatus
from cipher.background.workerstatus import now


def test_a_new_record_is_a_new_worker():
    snapshot = StatusRecord('worker-1').snapshot()
    assert snapshot == WorkerStatus(name='worker-1')
    assert verifyObject(IWorkerStatus, snapshot)


def test_counts_and_changes_show_in_the_next_snapshot_only():
    record = StatusRecord('worker-1')
    before = record.snapshot()
    when = now()
    record.update(state='working', started=when)
    record.count('units_done', last_run=when)
    record.count('units_done')
    after = record.snapshot()
    assert before.state == 'new' and before.units_done == 0  # a copy
    assert (after.state, after.units_done) == ('working', 2)
    assert record.state == 'working'
    assert after.started == after.last_run == datetime.datetime.fromtimestamp(
        when, datetime.timezone.utc)
    assert after.last_error_time is None
