"""The durable job queue as it is stored in the database.

Everything lives under one key of the database root,
:data:`ROOT_KEY`: a :class:`QueueFolder` that maps queue names to
:class:`JobQueue` objects.  A queue keeps

* ``jobs``: job id -> :class:`DurableJob`, the record of one job (what to
  call, as whom, on which site; its state, attempts, lease, result);
* ``pending``: the ids ready to run, oldest first, in a ``zc.queue``
  Queue, whose conflict resolution lets requests add jobs while runners
  take them without either one's commit failing (its CompositeQueue
  refuses to merge when a take empties one of its buckets);
* ``backlog``: (time, id) -> id for ready jobs beyond
  :data:`PENDING_LIMIT` (requests add them at its end, runners move them
  from its start to ``pending``: different buckets, so no conflict);
* ``delayed``: (run-at time, id) -> id for jobs that wait for a time
  (a delay, or the backoff after a failed attempt);
* ``leases``: id -> lease end (a time) for the jobs being run: a job whose
  lease ran out was being run by a process that died;
* ``finished``: (finished time, id) -> id, what pruning walks; the
  transaction of a job's work writes its record alone, and the runner
  files it here (and drops its lease) in its next claim, so runners
  finishing side by side never make a job's own commit conflict;
* ``progress``: id -> (value, data) that running jobs report, written in
  transactions of their own (never in the job's), a few a second at most;
* ``schedules``: name -> :class:`Schedule`, the jobs made at each slot;
* ``cancels``: id -> True for running jobs asked to stop (kept apart from
  the record, which the job's own transaction writes: a cancel must not
  make that commit conflict, and the job run again).

Times are seconds since the epoch (``time.time()``), comparable across
processes and machines whose clocks agree.
"""
import datetime
import logging
import random
import time

from BTrees.OOBTree import OOBTree
from persistent import Persistent
from persistent.mapping import PersistentMapping
from zc.queue import Queue

from cipher.background import jobstore as states
from cipher.background.errors import ConfigurationError

log = logging.getLogger('cipher.background.queue')

#: The key of the database root under which the queues live.
ROOT_KEY = 'cipher.background.queues'
#: The queue a job goes to unless told otherwise.
DEFAULT_QUEUE = 'default'
#: A runner takes one of the SPREAD oldest pending jobs (near FIFO).
SPREAD = 8
#: The most ids ``pending`` holds; more wait in ``backlog`` (a zc.queue
#: Queue is one tuple, written whole at every change).
PENDING_LIMIT = 100


class DurableJob(Persistent):
    """The record of one durable job.  Its fields are read by the status
    functions; only :class:`JobQueue` and the runner change them."""

    state = states.QUEUED
    owner = None  # the runner that holds the lease
    lease_end = None
    started = None
    finished = None
    result = None
    error = None
    traceback = None

    slot = None  # for a scheduled job: the time of its slot
    schedule = None  # and the name of its schedule

    def __init__(self, job_id, name, call, args, kwargs, site, principal,
                 note, attempts, backoff, lease, queue, run_at=None):
        self.id = job_id
        self.name = name
        self.call = call  # (dotted name,) or (Ref of a persistent, method)
        self.args = args
        self.kwargs = kwargs
        self.site = site  # a Ref, or None
        self.principal = principal
        self.note = note
        self.max_attempts = attempts
        self.backoff = backoff
        self.lease = lease
        self.queue = queue
        self.created = time.time()
        self.run_at = run_at
        self.attempts = 0

    def __repr__(self):
        return '<DurableJob %s %s %s>' % (self.id, self.name, self.state)


class Schedule(Persistent):
    """Makes a job (its record's ``fields``) at each slot: ``every``
    seconds from ``next_run`` on, or at the times of the ``cron``
    expression (UTC)."""

    def __init__(self, name, fields, every, cron, next_run):
        self.name = name
        self.fields = fields
        self.every = every
        self.cron = cron
        self.next_run = next_run

    def following(self, now):
        """The first slot after ``now`` (missed slots are skipped)."""
        if self.cron is not None:
            return next_cron_time(self.cron, now)
        missed = int((now - self.next_run) // self.every) + 1
        return self.next_run + max(1, missed) * self.every


def next_cron_time(expression, now):
    """The first time after ``now`` (seconds since the epoch) that the
    cron ``expression`` names, in UTC; ConfigurationError for a bad
    expression, or without the ``cron`` extra."""
    try:
        from cronsim import CronSim
        from cronsim import CronSimError
    except ImportError:
        raise ConfigurationError(
            "cron= needs the cron extra: pip install "
            "'cipher.background[cron]'") from None
    start = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    try:
        return next(CronSim(expression, start)).timestamp()
    except (CronSimError, TypeError) as exc:
        raise ConfigurationError('cron expression %r: %s (five fields: '
                                 'minute hour day month weekday)'
                                 % (expression, exc)) from None


class JobQueue(Persistent):
    """One named queue of durable jobs (see the module docstring)."""

    schedules = None  # made with the first schedule

    def __init__(self, name):
        self.name = name
        self.jobs = OOBTree()
        self.pending = Queue()
        self.backlog = OOBTree()
        self.delayed = OOBTree()
        self.leases = OOBTree()
        self.finished = OOBTree()
        self.progress = OOBTree()
        self.cancels = OOBTree()

    # -- in the caller's transaction --

    def add(self, job):
        """Record ``job`` and make it runnable at its ``run_at``."""
        self.jobs[job.id] = job
        self._schedule(job)

    def _schedule(self, job):
        now = time.time()
        if job.run_at is not None and job.run_at > now:
            self.delayed[(job.run_at, job.id)] = job.id
        elif len(self.pending) < PENDING_LIMIT and not len(self.backlog):
            self.pending.put(job.id)
        else:  # keep the order: after what waits in the backlog
            self.backlog[(now, job.id)] = job.id

    def add_schedule(self, schedule):
        """Add ``schedule``; one of the same name and the same timing
        keeps its next slot (start-up code may declare it every time)."""
        if self.schedules is None:
            self.schedules = OOBTree()
        old = self.schedules.get(schedule.name)
        if old is not None and (old.every, old.cron) == (schedule.every,
                                                         schedule.cron):
            schedule.next_run = old.next_run
        self.schedules[schedule.name] = schedule

    def remove_schedule(self, name):
        return self.schedules is not None and \
            self.schedules.pop(name, None) is not None

    # -- in a runner's claim transaction --

    def fire_due(self, now, make_job):
        """Add ``make_job(schedule, slot)`` for every schedule whose slot
        came, and move it on to its next slot; return how many fired."""
        fired = 0
        for schedule in (self.schedules or {}).values():
            if schedule.next_run <= now:
                try:
                    following = schedule.following(now)
                except Exception:  # that one only: the queue goes on
                    log.exception('Schedule %s of queue %s cannot find its '
                                  'next slot; it is skipped',
                                  schedule.name, self.name)
                    continue
                self.add(make_job(schedule, schedule.next_run))
                schedule.next_run = following
                fired += 1
        return fired

    def claim(self, owner, now):
        """The next job to run, leased to ``owner`` until ``now`` plus its
        lease, its attempts counted; None when nothing is due.

        Order: a job whose lease ran out (its runner died), then a delayed
        job whose time came, then the oldest pending one.  A job that was
        cancelled while waiting is dropped here.
        """
        job = self._expired(now) or self._due(now) or self._next_pending()
        while job is not None and not _runnable(job, now):
            self._restore_lost_lease(job)
            job = self._expired(now) or self._due(now) or self._next_pending()
        if job is None:
            return None
        job.attempts += 1
        job.state = states.RUNNING
        job.owner = owner
        job.lease_end = now + job.lease
        job.started = job.started or now
        self.leases[job.id] = job.lease_end
        return job

    def _restore_lost_lease(self, job):
        """Give ``job``, found running where waiting jobs are listed, its
        lease entry back if it has none: the next claim after its lease
        ends takes it again.

        A claim's records committed without its lease entries is what
        RelStorage 4.3 on SQLite does after a vote that failed on a read
        conflict: the failed attempt's objects stay in the storage's
        temporary table (its SQLite connection was not in a transaction,
        so nothing was rolled back) and are written by the connection's
        next commit, beside that commit's own leases tree.  The failed
        attempt's ids are still pending in that commit, so a later claim
        comes here."""
        if job.state == states.RUNNING and job.id not in self.leases:
            self.leases[job.id] = job.lease_end or 0.0
            log.warning('Queue %s: job %s was running with no lease entry '
                        '(a lost update of the leases tree); it is taken '
                        'again when its lease ends', self.name, job.id)

    def recover_orphans(self, now):
        """Give the running jobs that have no entry in ``leases`` and whose
        claim's lease ended an entry that ended: the next claim takes them
        again as a dead runner's.  Such a job is a lost update of the
        leases tree (see :meth:`_restore_lost_lease`, which finds most of
        them at once); without this it would stay ``running`` for good.
        Scans every record; returns the ids recovered."""
        orphans = [job.id for job in self.jobs.values()
                   if job.state == states.RUNNING and job.id not in self.leases
                   and (job.lease_end or 0) < now]
        for job_id in orphans:
            self.leases[job_id] = 0.0
        return orphans

    def leased(self):
        """{job id: lease end} of the jobs being run."""
        return dict(self.leases.items())

    def _expired(self, now):
        for job_id, lease_end in list(self.leases.items()):
            if lease_end < now:
                job = self.jobs.get(job_id)
                del self.leases[job_id]
                if job is not None and job.state in states.FINAL_STATES:
                    self.file_finished(job)  # its runner died before
                if job is None or job.state != states.RUNNING:
                    continue
                if job.attempts >= job.max_attempts:
                    self.finish(job, states.FAILED, now, error=(
                        'LeaseExpired: its lease of %gs ran out during '
                        'attempt %d of %d (its runner died, or stopped '
                        'renewing it)' % (
                            job.lease, job.attempts, job.max_attempts)))
                    continue
                job.state = states.QUEUED
                return job
        return None

    def _due(self, now):
        for key in self.delayed.keys(max=(now, '\uffff')):
            job = self.jobs.get(self.delayed.pop(key))
            if job is not None:
                return job
        return None

    def _next_pending(self):
        if len(self.pending) < PENDING_LIMIT // 2 and len(self.backlog):
            # The newest stays while others are pending: a request may be
            # adding beside it, and emptying that bucket would conflict.
            keep = 1 if len(self.pending) else 0
            keys = list(self.backlog.keys()[:PENDING_LIMIT // 2])
            for key in keys[:len(self.backlog) - keep]:
                self.pending.put(self.backlog.pop(key))
        # One of the oldest few, not always the oldest: runners that take
        # different ones at once do not conflict (the queue merges them).
        while len(self.pending):
            index = random.randrange(min(len(self.pending), SPREAD))
            job = self.jobs.get(self.pending.pull(index))
            if job is not None:
                return job
        return None

    # -- in the run transaction, or after it failed --

    def finish(self, job, state, now, **fields):
        """Move ``job`` to the final ``state`` with ``fields``, and file it
        (:meth:`mark_finished` and :meth:`file_finished` at once)."""
        self.mark_finished(job, state, now, **fields)
        self.file_finished(job)

    def mark_finished(self, job, state, now, **fields):
        """Give ``job``'s record the final ``state`` with ``fields``,
        changing nothing else: the transaction of a job's own work shares
        no object with other runners that way, so a runner finishing
        beside it never makes it conflict (and run the job's code again).
        :meth:`file_finished` follows in the runner's next claim (or a
        transaction of its own when it stops); if the runner dies before,
        the claim that finds its lease run out files the job."""
        for name, value in fields.items():
            setattr(job, name, value)
        job.state = state
        job.finished = now
        job.owner = job.lease_end = None

    def file_finished(self, job):
        """File a finished ``job``: its lease and cancel request go, and it
        joins the finished jobs (listed and pruned by age).  Idempotent."""
        self.leases.pop(job.id, None)
        self.cancels.pop(job.id, None)
        if (job.finished, job.id) not in self.finished:
            self.finished[(job.finished, job.id)] = job.id

    def requeue(self, job):
        """Run the finished ``job`` again, as a new job would run (its
        attempts counted from none): a person's decision, after the cause
        of a failure was fixed, or once it is known that the commit of an
        ``outcome-unknown`` job did not happen.  False, changing nothing,
        for a job that did not end failed, cancelled or outcome-unknown."""
        if job.state not in REQUEUEABLE:
            return False
        self.finished.pop((job.finished, job.id), None)
        self.progress.pop(job.id, None)
        self.cancels.pop(job.id, None)
        job.state = states.QUEUED
        job.attempts = 0
        job.run_at = job.started = job.finished = None
        job.result = job.error = job.traceback = None
        self._schedule(job)
        return True

    def reschedule(self, job, now, delay, **fields):
        """Run ``job`` again after ``delay`` seconds (a failed attempt)."""
        for name, value in fields.items():
            setattr(job, name, value)
        job.state = states.QUEUED
        job.owner = job.lease_end = None
        self.leases.pop(job.id, None)
        job.run_at = now + delay
        self._schedule(job)

    def cancel(self, job, now):
        """Cancel ``job``: a waiting one never runs (True); a running one
        is asked to stop (True); a finished one stays as it is (False)."""
        if job.state == states.QUEUED:
            if job.run_at is not None:
                self.delayed.pop((job.run_at, job.id), None)
            self.finish(job, states.CANCELLED, now)
            return True
        if job.state == states.RUNNING:
            self.cancels[job.id] = True
            return True
        return False

    def cancel_requested(self, job_id):
        return job_id in self.cancels

    def prune(self, now, max_age, max_count, limit=None):
        """Forget finished jobs older than ``max_age`` seconds, and the
        oldest beyond ``max_count``, ``limit`` of them at most (None: all);
        return how many were forgotten."""
        excess = len(self.finished) - max_count
        doomed = []
        for key in self.finished.keys():  # oldest first
            finished_at, _ = key
            if len(doomed) == limit or (
                    finished_at >= now - max_age and excess <= len(doomed)):
                break
            doomed.append(key)
        for key in doomed:
            job_id = self.finished.pop(key)
            self.jobs.pop(job_id, None)
            self.progress.pop(job_id, None)
        return len(doomed)


#: The final states of a job that may be run again (:meth:`JobQueue.requeue`).
REQUEUEABLE = frozenset([states.FAILED, states.CANCELLED,
                         states.OUTCOME_UNKNOWN])


def _runnable(job, now):
    """True when ``job`` waits and is due.  An id can be found twice (a job
    cancelled while pending and run again keeps its old entry): an entry
    of a job that runs, ended, or waits for a later time is passed by."""
    return job.state == states.QUEUED and (job.run_at is None
                                           or job.run_at <= now)


class QueueFolder(PersistentMapping):
    """Queue name -> JobQueue, at :data:`ROOT_KEY` of the root."""


def queues(root, create=False):
    """The QueueFolder of ``root``; made when ``create`` (else None when
    there is none)."""
    folder = root.get(ROOT_KEY)
    if folder is None and create:
        folder = root[ROOT_KEY] = QueueFolder()
    return folder


def get_queue(root, name=DEFAULT_QUEUE, create=False):
    """The JobQueue ``name`` in ``root`` (made when ``create``; else None
    when missing)."""
    folder = queues(root, create)
    if folder is None:
        return None
    queue = folder.get(name)
    if queue is None and create:
        queue = folder[name] = JobQueue(name)
    return queue
