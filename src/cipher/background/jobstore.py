"""Where job status lives: outside the ZODB, so reporting never conflicts.

:class:`MemoryJobStore` keeps the status of jobs in this process.  It is
safe to use from many threads, keeps finished jobs for a while (by age and
by count) and then forgets them, so memory stays flat however many jobs
run.  Unknown ids answer a status whose state is ``'unknown'``.
"""
import collections
import dataclasses
import datetime
import threading
import time
from typing import Any

from zope.interface import implementer

from cipher.background.errors import ConfigurationError
from cipher.background.errors import WaitTimeout
from cipher.background.interfaces import IJobStatus
from cipher.background.interfaces import IJobStore

PENDING_COMMIT = 'pending-commit'
QUEUED = 'queued'
RUNNING = 'running'
RETRYING = 'retrying'
SUCCEEDED = 'succeeded'
FAILED = 'failed'
CANCELLED = 'cancelled'
DROPPED = 'dropped'
UNKNOWN = 'unknown'

#: States a job never leaves.
FINAL_STATES = frozenset([SUCCEEDED, FAILED, CANCELLED, DROPPED])


@implementer(IJobStatus)
@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job; see IJobStatus."""

    id: str
    state: str = UNKNOWN
    name: str = None
    progress: Any = None
    progress_data: Any = None
    output: str = ''
    result: Any = None
    error: str = None
    traceback: str = None
    attempts: int = 0
    cancel_requested: bool = False
    created: datetime.datetime = None
    started: datetime.datetime = None
    finished: datetime.datetime = None

    @property
    def done(self):
        """True once the job is in a final state (or unknown)."""
        return self.state in FINAL_STATES or self.state == UNKNOWN


_BLANK = {field.name: field.default
          for field in dataclasses.fields(JobStatus) if field.name != 'output'}
_UPDATABLE = frozenset(_BLANK) - {'id', 'name', 'created'}


class _TailBuffer:
    """Text of which only the last ``limit`` characters are kept."""

    def __init__(self, limit):
        self.limit = limit
        self.chunks = collections.deque()
        self.size = 0

    def write(self, text):
        if not text or self.limit <= 0:
            return
        text = text[-self.limit:]
        self.chunks.append(text)
        self.size += len(text)
        while self.size > self.limit:
            head = self.chunks.popleft()
            excess = self.size - self.limit
            if len(head) > excess:
                self.chunks.appendleft(head[excess:])
                self.size -= excess
            else:
                self.size -= len(head)

    def getvalue(self):
        return ''.join(self.chunks)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


@implementer(IJobStore)
class MemoryJobStore:
    """Job status in this process's memory.

    ``keep_seconds`` and ``keep_count`` bound how long and how many
    finished jobs are remembered; ``output_limit`` is the number of
    characters of output kept per job (the last ones).
    """

    def __init__(self, keep_seconds=3600, keep_count=1000,
                 output_limit=64 * 1024, clock=time.monotonic):
        for name, value in [('keep_seconds', keep_seconds),
                            ('keep_count', keep_count),
                            ('output_limit', output_limit)]:
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or value < 0:
                raise ConfigurationError(
                    'MemoryJobStore %s must be a number >= 0, not %r'
                    % (name, value))
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self.output_limit = output_limit
        self.clock = clock
        self._changed = threading.Condition()
        # id -> the JobStatus fields, changed in place (a new frozen
        # snapshot per update would cost more than a no-op job's commit)
        self._jobs = {}
        self._output = {}         # id -> _TailBuffer
        self._finished = collections.OrderedDict()  # id -> clock() at end

    def __len__(self):
        with self._changed:
            return len(self._jobs)

    def add(self, job_id, name, state):
        """See IJobStore."""
        with self._changed:
            if job_id in self._jobs:
                raise ValueError('job id %r is in use already' % job_id)
            self._jobs[job_id] = dict(_BLANK, id=job_id, name=name,
                                      state=state, created=_now())
            self._output[job_id] = _TailBuffer(self.output_limit)
            self._prune()

    def get(self, job_id):
        """See IJobStore."""
        with self._changed:
            return self._snapshot(job_id)

    def _snapshot(self, job_id):
        fields = self._jobs.get(job_id)
        if fields is None:
            return JobStatus(id=job_id)
        return JobStatus(**dict(fields,
                                output=self._output[job_id].getvalue()))

    def update(self, job_id, expect=None, **fields):
        """See IJobStore."""
        if not fields.keys() <= _UPDATABLE:
            raise TypeError('cannot update %s of a job; the fields are %s'
                            % (', '.join(sorted(fields.keys() - _UPDATABLE)),
                               ', '.join(sorted(_UPDATABLE))))
        with self._changed:
            record = self._jobs.get(job_id)
            if record is None or record['state'] in FINAL_STATES:
                return False
            if expect is not None and record['state'] not in expect:
                return False
            final = fields.get('state') in FINAL_STATES
            if final:
                fields.setdefault('finished', _now())
                self._finished[job_id] = self.clock()
            record.update(fields)
            if final:
                self._changed.notify_all()  # what wait() waits for
            return True

    def write(self, job_id, text):
        """See IJobStore."""
        with self._changed:
            buffer = self._output.get(job_id)
            if buffer is not None:
                buffer.write(text)

    def wait(self, job_id, timeout=None):
        """See IJobStore."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._changed:
            while True:
                record = self._jobs.get(job_id)
                if record is None or record['state'] in FINAL_STATES:
                    return self._snapshot(job_id)
                remaining = (None if deadline is None
                             else deadline - self.clock())
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(
                        'job %s is still %s after %ss; wait longer, or '
                        'poll get_status() instead' % (
                            job_id, record['state'], timeout))
                self._changed.wait(remaining)

    def _prune(self):
        """Forget finished jobs beyond the count or past the age."""
        horizon = self.clock() - self.keep_seconds
        finished = self._finished
        while finished and (len(finished) > self.keep_count
                            or next(iter(finished.values())) < horizon):
            job_id, _ = finished.popitem(last=False)
            del self._jobs[job_id]
            del self._output[job_id]

    def prune(self):
        """See IJobStore."""
        with self._changed:
            self._prune()
