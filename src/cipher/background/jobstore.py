"""Where job status lives: outside the ZODB, so reporting never conflicts.

The store owns the state machine of a job: every change of state goes
through :meth:`MemoryJobStore.transition`, which allows only the moves in
:data:`TRANSITIONS`.  Other fields change with ``update()``.

:class:`MemoryJobStore` keeps the status of jobs in this process.  It is
safe to use from many threads, keeps finished jobs for a while (by age and
by count) and then forgets them, so memory stays flat however many jobs
run.  Unknown ids answer a status whose state is ``'unknown'``.
"""
import collections
import collections.abc
import dataclasses
import datetime
import heapq
import math
import numbers
import threading
import time
from typing import Any

from zope.interface import implementer

from cipher.background.errors import ArgumentTypeError
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
#: SystemExit or KeyboardInterrupt inside the job, or stopped at process
#: exit while it ran.
INTERRUPTED = 'interrupted'
#: The job's commit failed after the vote: it may or may not have happened.
OUTCOME_UNKNOWN = 'outcome-unknown'
#: The state reported for ids the store does not know (any more).
UNKNOWN = 'unknown'

#: States a job never leaves.
FINAL_STATES = frozenset([SUCCEEDED, FAILED, CANCELLED, DROPPED,
                          INTERRUPTED, OUTCOME_UNKNOWN])

#: state -> the states a job in it may move to; final states go nowhere.
TRANSITIONS = {
    PENDING_COMMIT: frozenset([QUEUED, DROPPED, CANCELLED]),
    QUEUED: frozenset([RUNNING, CANCELLED, FAILED, INTERRUPTED]),
    RUNNING: frozenset([RETRYING, SUCCEEDED, FAILED, CANCELLED,
                        INTERRUPTED, OUTCOME_UNKNOWN]),
    RETRYING: frozenset([RUNNING, FAILED, CANCELLED, INTERRUPTED]),
    **{state: frozenset() for state in FINAL_STATES},
}


@implementer(IJobStatus)
@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job; see IJobStatus.  ``principal`` is the id of
    the principal who started the job, or None; ``site`` the path of its
    site where the host locates sites by path (Zope: ``'/plone'``), or
    None."""

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
    principal: str = None
    site: str = None

    @property
    def done(self):
        """True once the job is in a final state (or unknown)."""
        return self.state in FINAL_STATES or self.state == UNKNOWN


_BLANK = {field.name: field.default
          for field in dataclasses.fields(JobStatus) if field.name != 'output'}
# What the store itself sets: at add() (id, name, created, principal) or
# by transition() (state, finished).
_MANAGED = frozenset(['id', 'name', 'created', 'principal', 'site',
                      'state', 'finished'])
_UPDATABLE = frozenset(_BLANK) - _MANAGED
_ADDABLE = frozenset(TRANSITIONS) - FINAL_STATES


def select(jobs, state=None, principal=None, name=None, limit=100,
           created=lambda job: job.created, site=None):
    """The ``jobs`` (anything with ``state``, ``principal`` and ``name``:
    statuses, records) that pass the filters of IJobListing.list(),
    newest first by ``created(job)``, ``limit`` at most.  Among jobs made
    at the same moment, the later in ``jobs`` comes first."""
    states = _checked_states(state)
    if principal is not None and not isinstance(principal, str):
        raise ArgumentTypeError('principal must be a principal id (a str) '
                                'or None for all, not %r' % (principal,))
    if name is not None and not isinstance(name, str):
        raise ArgumentTypeError('name must be a str (a part of the dotted '
                                'name) or None for all, not %r' % (name,))
    if limit is not None and (isinstance(limit, bool) or not isinstance(
            limit, numbers.Integral) or limit < 1):
        raise ArgumentTypeError('limit must be a whole number >= 1, or None'
                                ' for all, not %r' % (limit,))
    if site is not None and not isinstance(site, str):
        raise ArgumentTypeError('site must be the path of a site (a str) '
                                'or None for all, not %r' % (site,))
    chosen = [job for job in reversed(list(jobs))
              if (states is None or job.state in states)
              and (principal is None or job.principal == principal)
              and (name is None or name in (job.name or ''))
              and (site is None or _site_of(job) == site)]
    if limit is None:
        return sorted(chosen, key=created, reverse=True)
    return heapq.nlargest(limit, chosen, key=created)


def _site_of(job):
    """The path of the site of ``job`` (a status, or a durable record)."""
    site = job.site
    if site is None or isinstance(site, str):
        return site
    return site_path(site.hint)


def site_path(hint):
    """The path a host's ``locate()`` gave (a tuple of names, as Zope's
    physical paths are) as text, ``'/'`` for the root; None for none."""
    if not hint:
        return None
    return '/'.join(hint) or '/'


def _checked_states(state):
    """``state`` as a frozenset of states, or None for all."""
    if state is None:
        return None
    states = (state,) if isinstance(state, str) else state
    if not isinstance(states, collections.abc.Iterable) or not all(
            isinstance(each, str) for each in states):
        raise ArgumentTypeError('state must be a job state (a str), a '
                                'collection of them, or None for all, not '
                                '%r' % (state,))
    states = frozenset(states)
    unknown = sorted(states - frozenset(TRANSITIONS))
    if unknown:
        raise ConfigurationError(
            'there is no job state %r; use one of %s'
            % (unknown[0], ', '.join(sorted(TRANSITIONS))))
    return states


def _check_fields(method, fields):
    """ArgumentTypeError unless ``fields`` may be changed by ``method``."""
    if 'state' in fields:
        raise ArgumentTypeError(
            'update() does not change the state of a job; use '
            'transition(job_id, state, **fields), which allows only the '
            'moves in jobstore.TRANSITIONS')
    bad = sorted(fields.keys() - _UPDATABLE)
    if bad:
        raise ArgumentTypeError(
            '%s() cannot set %s of a job (%s); the fields it sets are %s'
            % (method, ', '.join(bad),
               'kept as set by add() or transition()'
               if set(bad) <= _MANAGED else 'no such field',
               ', '.join(sorted(_UPDATABLE))))


def _check_state(state, allowed, what):
    if not isinstance(state, str) or state not in allowed:
        raise ConfigurationError(
            '%r is not a state %s; use one of %s'
            % (state, what, ', '.join(sorted(allowed))))


def _check_number(owner, name, value, whole=False, hint=''):
    """ConfigurationError unless ``value`` is a finite number >= 0 (an int
    with ``whole``); ArgumentTypeError, a kind of it, for other types."""
    kind = numbers.Integral if whole else numbers.Real
    message = '%s %s must be %s, not %r%s' % (
        owner, name, 'a whole number >= 0' if whole
        else 'a finite number >= 0', value, hint)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ArgumentTypeError(message)
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(message)


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


class _Record:
    """One job in a MemoryJobStore: its fields, changed in place under its
    own lock (a new frozen snapshot per update would cost more than a
    no-op job's commit), its output from the first write, and a Condition
    for the threads that wait for it, made by the first of them."""

    __slots__ = ('lock', 'fields', 'output', 'waiters')

    def __init__(self, fields):
        self.lock = threading.Lock()
        self.fields = fields
        self.output = None
        self.waiters = None

    def copy(self):
        """With the lock held: the fields of a JobStatus of the job."""
        output = self.output.getvalue() if self.output is not None else ''
        return dict(self.fields, output=output)


@implementer(IJobStore)
class MemoryJobStore:
    """Job status in this process's memory.

    ``keep_seconds`` (a finite number >= 0) and ``keep_count`` (a whole
    number >= 0) bound how long and how many finished jobs are
    remembered; ``output_limit`` (a whole number >= 0) is the number of
    characters of output kept per job (the last ones).  ``clock`` (a
    callable returning seconds that never go back, ``time.monotonic`` by
    default) measures the age of finished jobs.  Bad values raise
    ConfigurationError (ArgumentTypeError for wrong types).

    The limits hold at all times: finished jobs beyond them are forgotten
    when a job is added or finishes and before get(), wait() and len()
    answer.  With ``keep_count=0`` a job is forgotten as soon as it
    finishes, so ``wait()`` answers its status as 'unknown'.
    """

    # Each job has a lock of its own, and there is no lock of the whole
    # store on the way of a job: the submitting thread adds jobs while
    # pool threads move theirs along.  A thread that takes a contended
    # lock holds it while it waits for the interpreter, so one shared lock
    # taken three times per job turned a burst of jobs into a convoy (the
    # threads handing each other the interpreter at every job).  What is
    # shared is changed by single operations of dict and deque, which are
    # atomic; forgetting finished jobs is done by one thread at a time,
    # and skipped by the others meanwhile.

    def __init__(self, keep_seconds=3600, keep_count=1000,
                 output_limit=64 * 1024, clock=time.monotonic):
        _check_number('MemoryJobStore', 'keep_seconds', keep_seconds)
        _check_number('MemoryJobStore', 'keep_count', keep_count, True)
        _check_number('MemoryJobStore', 'output_limit', output_limit, True)
        if not callable(clock):
            raise ArgumentTypeError(
                'MemoryJobStore clock must be a callable returning seconds '
                '(like time.monotonic), not %r' % (clock,))
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self.output_limit = output_limit
        self.clock = clock
        self._jobs = {}   # id -> _Record
        # (clock() when it finished, id, record), oldest first: pruning
        # stops at the first job young enough, so it costs only what it
        # removes.
        self._finished = collections.deque()
        self._pruning = threading.Lock()

    def __len__(self):
        """The number of jobs known: unfinished ones and finished ones
        within the limits."""
        self._prune()
        return len(self._jobs)

    def add(self, job_id, name, state, principal=None, site=None):
        """Remember a new job in ``state`` (a state that is not final),
        started by ``principal`` (a principal id, or None) on ``site`` (the
        path of its site, or None).

        ConfigurationError for an id in use, a final or unknown state.
        """
        _check_state(state, _ADDABLE, 'a job can be added in')
        for field, value, what in (('principal', principal, 'principal id'),
                                   ('site', site, 'path of a site')):
            if value is not None and not isinstance(value, str):
                raise ArgumentTypeError(
                    '%s must be a %s (a string) or None, not %r'
                    % (field, what, value))
        record = _Record(dict(_BLANK, id=job_id, name=name, state=state,
                              created=_now(), principal=principal,
                              site=site))
        if self._jobs.setdefault(job_id, record) is not record:
            raise ConfigurationError(
                'job id %r is in use already; give each job a new id '
                '(scheduler.new_id())' % (job_id,))
        if self._finished:
            self._prune()

    def get(self, job_id):
        """The JobStatus of the job (state 'unknown' if not known)."""
        self._prune()
        record = self._jobs.get(job_id)
        if record is None:
            return JobStatus(id=job_id)
        with record.lock:
            fields = record.copy()
        return JobStatus(**fields)

    def list(self, state=None, principal=None, name=None, limit=100,
             site=None):
        """See IJobListing; the statuses carry no output (get() does)."""
        self._prune()
        return select(self._statuses(), state, principal, name, limit,
                      site=site)

    def counts(self, site=None):
        """See IJobListing."""
        self._prune()
        return dict(collections.Counter(
            status.state for status in select(
                self._statuses(), site=site, limit=None)))

    def _statuses(self):
        """The JobStatus of every job known, in the order they came,
        without their output (get() has it: a list need not copy it)."""
        statuses = []
        for record in list(self._jobs.copy().values()):
            with record.lock:
                statuses.append(JobStatus(**record.fields))
        return statuses

    def transition(self, job_id, state, **fields):
        """Move the job to ``state`` and set ``fields``, atomically.

        Returns True when done; False, changing nothing, when the job is
        unknown or TRANSITIONS does not allow the move from its current
        state (a race such as a cancel before the job ran is normal).
        Entering a final state sets ``finished`` and wakes waiters.
        ConfigurationError for an unknown state name, ArgumentTypeError
        for fields update() does not take.
        """
        _check_state(state, TRANSITIONS, 'a job can be in')
        _check_fields('transition', fields)
        record = self._jobs.get(job_id)
        if record is None:
            return False
        final = state in FINAL_STATES
        if final:
            fields['finished'] = _now()
        with record.lock:
            current = record.fields
            if state not in TRANSITIONS[current['state']]:
                return False
            current.update(fields)
            current['state'] = state
            if final:
                self._finished.append((self.clock(), job_id, record))
                if record.waiters is not None:
                    record.waiters.notify_all()
        if final:
            self._prune()
        return True

    def update(self, job_id, expect=None, **fields):
        """Change fields other than the state, atomically; True if done.

        Nothing changes (and False is returned) for an unknown or
        finished job, or when ``expect`` (a collection of states) does not
        hold the job's current state.  ArgumentTypeError for ``state``
        (use transition()) and for fields a job has not or that only the
        store sets (id, name, created, principal, finished).
        """
        _check_fields('update', fields)
        if expect is not None:
            if isinstance(expect, str) or not isinstance(
                    expect, collections.abc.Collection):
                raise ArgumentTypeError(
                    'expect must be a collection of states, such as '
                    '{%r}, not %r' % (QUEUED, expect))
            for state in expect:
                _check_state(state, TRANSITIONS, 'a job can be in')
        record = self._jobs.get(job_id)
        if record is None:
            return False
        with record.lock:
            current = record.fields
            if current['state'] in FINAL_STATES:
                return False
            if expect is not None and current['state'] not in expect:
                return False
            current.update(fields)
            return True

    def write(self, job_id, text):
        """Append ``text`` (a string) to the job's output, keeping the
        last ``output_limit`` characters; ignored for unknown ids."""
        if not isinstance(text, str):
            raise ArgumentTypeError(
                'job output must be text (str), not %r; decode bytes first'
                % (type(text).__name__,))
        record = self._jobs.get(job_id)
        if record is None:
            return
        with record.lock:
            if record.output is None:
                record.output = _TailBuffer(self.output_limit)
            record.output.write(text)

    def wait(self, job_id, timeout=None):
        """Block until the job is finished; return its final status (state
        'unknown' for unknown ids, answered at once).

        ``timeout`` is None (no limit) or a finite number of seconds >= 0,
        counted in real time whatever the store's clock; WaitTimeout when
        it passes first.
        """
        if timeout is not None:
            _check_number('wait()', 'timeout', timeout,
                          hint='; pass None to wait without a limit')
            deadline = time.monotonic() + timeout
        self._prune()
        record = self._jobs.get(job_id)
        if record is None:
            return JobStatus(id=job_id)
        with record.lock:
            while record.fields['state'] not in FINAL_STATES:
                remaining = None
                if timeout is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeout(
                            'job %s is still %s after %ss; wait longer, or '
                            'poll get_status() instead' % (
                                job_id, record.fields['state'], timeout))
                if record.waiters is None:
                    record.waiters = threading.Condition(record.lock)
                record.waiters.wait(remaining)
            fields = record.copy()
        # Finished now: the limits may say to forget it at once.
        self._prune()
        if job_id not in self._jobs:
            return JobStatus(id=job_id)
        return JobStatus(**fields)

    def _prune(self):
        """Forget finished jobs beyond the count or past the age; skipped
        while another thread does it."""
        finished = self._finished
        if not finished or not self._pruning.acquire(False):
            return
        try:
            horizon = self.clock() - self.keep_seconds
            while finished and (len(finished) > self.keep_count
                                or finished[0][0] < horizon):
                _, job_id, record = finished.popleft()
                if self._jobs.get(job_id) is record:  # not added anew
                    del self._jobs[job_id]
        finally:
            self._pruning.release()

    def prune(self):
        """Forget finished jobs beyond the age and count limits now (the
        store also does so by itself)."""
        with self._pruning:
            pass  # another thread's pruning, if any, is done
        self._prune()
