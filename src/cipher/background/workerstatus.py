"""The status of a worker: changed in place by its thread, read by anyone
as :class:`WorkerStatus` snapshots.

The status lives outside the ZODB, so reporting never makes a unit
conflict.
"""
import dataclasses
import datetime
import time

from zope.interface import implementer

from cipher.background.interfaces import IWorkerStatus


@implementer(IWorkerStatus)
@dataclasses.dataclass(frozen=True)
class WorkerStatus:
    """A snapshot of a worker; see IWorkerStatus."""

    name: str
    state: str = 'new'
    units_done: int = 0
    units_failed: int = 0
    conflicts_retried: int = 0
    units_outcome_unknown: int = 0
    last_error: str = None
    last_error_time: datetime.datetime = None
    started: datetime.datetime = None
    last_run: datetime.datetime = None


_TIMES = ('last_error_time', 'started', 'last_run')


def now():
    """A time for the record: a float here, a datetime in the snapshot
    (cheaper on every unit)."""
    return time.time()


def _datetime(timestamp):
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


class StatusRecord:
    """The fields of a WorkerStatus, changed in place by the worker.

    A new frozen snapshot per change would cost more than a unit's commit
    on a fast storage; :meth:`snapshot` copies the fields out instead.
    There is no lock: only the worker's own thread changes the record
    once it runs (before that, only the thread that starts it), a dict's
    item assignments are atomic, and ``dict(fields)`` copies them in one
    step, so readers always see values that were set.  Times are given
    as :func:`now` floats.
    """

    def __init__(self, name):
        self._fields = dataclasses.asdict(WorkerStatus(name=name))

    @property
    def state(self):
        return self._fields['state']

    def update(self, **changes):
        self._fields.update(changes)

    def count(self, field, **changes):
        """Add 1 to the counter ``field`` and apply ``changes``."""
        fields = self._fields
        fields[field] += 1
        if changes:
            fields.update(changes)

    def snapshot(self):
        fields = dict(self._fields)
        for name in _TIMES:
            fields[name] = _datetime(fields[name])
        return WorkerStatus(**fields)
