"""The runner of durable jobs: claims them, runs them exactly once.

A :class:`QueueRunner` serves one queue of one database with a few
threads of this process (the ``cipher-background jobs`` command runs one
in a process of its own).  Each job goes through three kinds of
transactions:

1. the claim: the job leaves the queue and gets a lease (this runner, an
   end time) and an attempt;
2. the run: the job's callable, in the unit-of-work context (its site,
   its principal, a retry on conflicts), and, in the same transaction,
   the record's ``succeeded``: the job's effects and its completion
   commit together, or neither does;
3. after a run that failed: the record is rescheduled (an attempt left:
   after its backoff, never sleeping here) or ends ``failed`` with its
   traceback; a commit whose outcome is unknown (it failed after the
   vote) ends ``outcome-unknown`` and is never run again blindly.

A runner that dies holds its lease until it runs out; then any runner
claims the job again.  Progress and cancellation are read and written in
transactions of their own, a few a second at most.
"""
import collections
import logging
import os
import socket
import threading
import time
import traceback

import transaction
from ZODB.POSException import POSKeyError

from cipher.background import durable
from cipher.background import jobruntime
from cipher.background import jobstore as states
from cipher.background import queuestore
from cipher.background import shutdown
from cipher.background._jobargs import from_refs
from cipher.background._jobargs import result_oids
from cipher.background.context import UnitOfWork
from cipher.background.errors import AlreadyStarted
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import Interrupted
from cipher.background.errors import JobCancelled
from cipher.background.errors import ObjectNotStored
from cipher.background.errors import OutcomeUnknown
from cipher.background.host import get_host
from cipher.background.scheduler import new_id
from cipher.background.scope import current_connection

log = logging.getLogger('cipher.background.queue')

#: Seconds between two writes of a running job's progress, at least.
PROGRESS_INTERVAL = 0.5
#: How long finished records are kept (a week), and how many at most.
KEEP_SECONDS = 7 * 24 * 3600
KEEP_COUNT = 10000
#: Seconds between two prunings by one runner.
PRUNE_INTERVAL = 300
#: Records forgotten in one pruning transaction at most.
PRUNE_BATCH = 200


class _LeaseLost(Exception):
    """The job is no longer this runner's (its lease ran out and another
    runner took it, or it was cancelled before it started)."""


class _Claim:
    """What the run needs of a claimed record, read in the claim; its
    ``owner`` names this claim alone (not the runner, whose threads could
    otherwise take each other's expired leases for their own)."""

    def __init__(self, job):
        self.owner = job.owner
        self.id = job.id
        self.name = job.name
        self.note = job.note
        self.principal = job.principal
        self.lease = job.lease
        site = job.site
        self.site_oid = None if site is None else site.obj._p_oid
        self.site_hint = None if site is None else site.hint


class QueueRunner:
    """Runs the jobs of ``queue`` in ``db`` with ``threads`` threads.

    Idle threads look for work every ``poll`` seconds, twice as long
    after each empty look up to ``max_poll``; a job enqueued in this
    process wakes them at its commit.  ``run_pending()`` runs what is due
    in the calling thread instead (tests, scripts).  Finished records are
    kept ``keep_seconds``, and ``keep_count`` of them at most: an idle
    runner forgets older ones every :data:`PRUNE_INTERVAL` seconds.
    """

    def __init__(self, db, queue=queuestore.DEFAULT_QUEUE, threads=2,
                 poll=1.0, max_poll=5.0, host=None, retry_policy=None,
                 keep_seconds=KEEP_SECONDS, keep_count=KEEP_COUNT):
        if not callable(getattr(db, 'open', None)):
            raise ArgumentTypeError('expected a ZODB database, not %r'
                                    % (db,))
        if isinstance(threads, bool) or not isinstance(threads, int) \
                or threads < 1:
            raise ArgumentTypeError('threads must be a whole number >= 1, '
                                    'not %r' % (threads,))
        for name, value, least in (('poll', poll, 0),
                                   ('max_poll', max_poll, 0),
                                   ('keep_seconds', keep_seconds, -1)):
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not least < value < float('inf'):
                raise ArgumentTypeError('%s must be a number of seconds %s, '
                                        'not %r' % (name, '> 0' if least == 0
                                                    else '>= 0', value))
        if isinstance(keep_count, bool) or not isinstance(keep_count, int) \
                or keep_count < 0:
            raise ArgumentTypeError('keep_count must be a whole number >= 0,'
                                    ' not %r' % (keep_count,))
        if not isinstance(queue, str) or not queue:
            raise ArgumentTypeError('queue must be a non-empty str, not %r'
                                    % (queue,))
        self.db = db
        self.queue = queue
        self.threads = threads
        self.poll = poll
        self.max_poll = max(poll, max_poll)
        self.host = host or get_host()
        self.retry_policy = retry_policy
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self._pruned = 0.0  # time.monotonic() of the last pruning
        self.owner = '%s:%d:%s' % (socket.gethostname(), os.getpid(),
                                   new_id()[:8])
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = collections.deque()  # claimed here, not yet run
        # Ids of the jobs that succeeded here, filed by the next claim.
        self._unfiled = []
        self._unfiled_lock = threading.Lock()
        self._threads = []
        durable.register_database(db)

    # -- life --

    @property
    def name(self):
        return 'queue runner of %s (%d threads)' % (self.queue, self.threads)

    def is_alive(self):
        """True while a thread of this runner runs."""
        return any(thread.is_alive() for thread in self._threads)

    def start(self):
        """Start the threads; return self.  Once: AlreadyStarted for a
        second start (make a new runner)."""
        if self._threads:
            raise AlreadyStarted('this QueueRunner was started already; '
                                 'make a new one to start again')
        install(self.db, self.queue)
        durable.add_runner(self.db, self.queue, self)
        shutdown.register(self)
        shutdown.arm_exit_hook()
        for number in range(self.threads):
            thread = threading.Thread(
                target=self._loop, daemon=True,
                name='cipher.background queue %s %d' % (self.queue, number))
            self._threads.append(thread)
            thread.start()
        return self

    def wake(self):
        """Look for work now (a job was enqueued in this process)."""
        self._wake.set()

    def request_stop(self):
        self._stopping.set()
        self._wake.set()

    def join(self, deadline):
        for thread in self._threads:
            thread.join(shutdown.remaining(deadline))
        alive = [thread for thread in self._threads if thread.is_alive()]
        if not alive:
            durable.remove_runner(self.db, self.queue, self)
        return alive

    def stop(self, timeout=None):
        """Stop after the jobs being run; True when every thread ended."""
        self.request_stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        return not self.join(deadline)

    def _loop(self):
        delay = self.poll
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                ran = self.run_one(batch=self.threads)
            except Exception:
                log.exception('Queue %s: the runner failed; going on',
                              self.queue)
                ran = False
            if ran:
                delay = self.poll
                continue
            if time.monotonic() - self._pruned >= PRUNE_INTERVAL:
                self._pruned = time.monotonic()
                try:
                    self.prune()
                except Exception:
                    log.exception('Queue %s: pruning failed; going on',
                                  self.queue)
            self._wake.wait(delay)
            delay = min(delay * 2, self.max_poll)
        self._give_back_ready()
        self._file_unfiled()

    # -- work --

    def run_pending(self, limit=None):
        """Run due jobs in this thread until none is left (or ``limit``
        ran); return how many ran."""
        count = 0
        try:
            while (limit is None or count < limit) and self.run_one():
                count += 1
        finally:
            self._file_unfiled()
        return count

    def prune(self):
        """Forget the finished records older than ``keep_seconds`` and the
        oldest beyond ``keep_count``; return how many were forgotten.
        First, running jobs that lost their lease entry are made to be
        taken again (see JobQueue.recover_orphans).

        In transactions of :data:`PRUNE_BATCH` records at most: one large
        transaction would change many buckets of the jobs tree at once,
        and make the requests enqueuing meanwhile conflict."""
        orphans = self._in_transaction(
            lambda queue, now: queue.recover_orphans(now), 'recover') or []
        for job_id in orphans:
            log.warning('Queue %s: job %s was running with no lease entry '
                        '(a lost update of the leases tree); it is taken '
                        'again as a dead runner\'s', self.queue, job_id)
        forgotten = 0
        while True:
            done = self._in_transaction(
                lambda queue, now: queue.prune(
                    now, self.keep_seconds, self.keep_count, PRUNE_BATCH),
                'prune') or 0
            forgotten += done
            if done < PRUNE_BATCH:
                return forgotten

    def run_one(self, batch=1):
        """Run one due job; False when none was due.  A job another thread
        of this runner claimed comes first; else up to ``batch`` jobs are
        claimed in one transaction, and the others wait here for the other
        threads (a claim transaction per job costs more than the job)."""
        try:
            claim = self._ready.popleft()
        except IndexError:
            claims = self._claim(batch)
            if not claims:
                return False
            claim = claims.pop(0)
            if claims:
                self._ready.extend(claims)
                self._wake.set()  # for the other threads
        self._run(claim)
        return True

    def _claim(self, batch=1):
        """Up to ``batch`` claims, in one transaction that first files the
        jobs that succeeded here since the last one (see
        JobQueue.mark_finished), and fires the schedules that are due."""
        def claim(queue, now):
            _file_in(queue, unfiled)
            queue.fire_due(now, lambda schedule, slot: durable.scheduled_job(
                schedule, slot, self.db))
            claims = []
            while len(claims) < batch:
                job = queue.claim('%s:%s' % (self.owner, new_id()[:8]), now)
                if job is None:
                    break
                claims.append(_Claim(job))
            return claims
        unfiled = self._take_unfiled()
        try:
            return self._in_transaction(claim, 'claim') or []
        except BaseException:
            self._add_unfiled(unfiled)  # for the next claim
            raise

    def _add_unfiled(self, job_ids):
        with self._unfiled_lock:
            self._unfiled.extend(job_ids)

    def _take_unfiled(self):
        with self._unfiled_lock:
            taken, self._unfiled[:] = list(self._unfiled), []
        return taken

    def _file_unfiled(self):
        """File what succeeded here and is not filed yet (the runner
        stops, or run_pending() ends)."""
        unfiled = self._take_unfiled()
        if not unfiled:
            return
        try:
            self._in_transaction(lambda queue, now: _file_in(queue, unfiled),
                                 'file %d job(s)' % len(unfiled))
        except Exception:  # their leases running out will file them
            log.exception('Queue %s: filing %d finished job(s) failed',
                          self.queue, len(unfiled))

    def _give_back_ready(self):
        """Give back what was claimed here and will not be run (the
        runner stops): it goes to the queue again, no attempt counted."""
        while True:
            try:
                claim = self._ready.popleft()
            except IndexError:
                return
            self._settle(claim, _give_back)

    def _run(self, claim):
        uow = UnitOfWork(self.db, claim.site_oid, claim.principal,
                         host=self.host, site_hint=claim.site_hint,
                         retry_policy=self.retry_policy)
        handle = _RunningJob(claim.id, self)
        _leases.hold(self, claim)
        try:
            uow.run(lambda: self._call(claim, handle), note=claim.note,
                    stop_event=self._stopping)
            self._add_unfiled([claim.id])  # the next claim files it
        except _LeaseLost as exc:
            log.warning('Queue %s: job %s (%s) was not run: %s',
                        self.queue, claim.id, claim.name, exc)
        except JobCancelled:
            self._settle(claim, lambda queue, job, now: queue.finish(
                job, states.CANCELLED, now))
        except OutcomeUnknown as exc:
            log.critical('Queue %s: job %s (%s): %s', self.queue, claim.id,
                         claim.name, exc)
            error = '%s: %s' % (type(exc).__name__, exc)
            self._settle(claim, lambda queue, job, now: queue.finish(
                job, states.OUTCOME_UNKNOWN, now, error=error))
        except Interrupted:
            self._settle(claim, _give_back)  # this runner is stopping
        except Exception as exc:
            self._failed(claim, exc)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and \
                    threading.current_thread() is threading.main_thread():
                self._settle(claim, _give_back)  # Ctrl-C in run_pending()
                raise
            # SystemExit (or the like) from the job's code: its failure,
            # never the end of this thread.
            self._failed(claim, exc)
        finally:
            _leases.release(claim)
            handle.close()
            durable.notify_settled()

    def _call(self, claim, handle):
        """In the unit: the job, then its record's success."""
        conn = current_connection()
        queue = queuestore.get_queue(conn.root(), self.queue)
        job = queue.jobs.get(claim.id) if queue is not None else None
        if job is None or job.state != states.RUNNING \
                or job.owner != claim.owner:
            raise _LeaseLost('its record is %r now' % (job,))

        def load(ref):
            try:
                return self.host.load(conn, ref.obj._p_oid, ref.hint)
            except (POSKeyError, KeyError):
                raise ObjectNotStored(
                    'the persistent argument %r is no longer in the '
                    'database' % (ref.obj,)) from None

        if queue.cancel_requested(job.id):  # before it started (a retry)
            raise JobCancelled('job %s was cancelled' % job.id)
        fn = _callable(job.call, load)
        token = jobruntime.current_job_var.set(handle)
        try:
            result = fn(*from_refs(job.args, load),
                        **from_refs(job.kwargs, load))
        finally:
            jobruntime.current_job_var.reset(token)
        if handle.cancelled():  # asked meanwhile: undo it all
            raise JobCancelled('job %s was cancelled' % job.id)
        queue.mark_finished(job, states.SUCCEEDED, time.time(),
                            result=result_oids(result))
        return result

    def _failed(self, claim, exc):
        text = ''.join(traceback.format_exception(
            type(exc), exc, exc.__traceback__))
        error = '%s: %s' % (type(exc).__name__, exc)

        def settle(queue, job, now):
            if job.attempts < job.max_attempts:
                delay = job.backoff * 2 ** (job.attempts - 1)
                queue.reschedule(job, now, delay, error=error,
                                 traceback=text)
                log.warning('Queue %s: job %s (%s) failed, attempt %d of %d;'
                            ' again in %gs: %s', self.queue, job.id,
                            job.name, job.attempts, job.max_attempts, delay,
                            error)
            else:
                queue.finish(job, states.FAILED, now, error=error,
                             traceback=text)
                log.error('Queue %s: job %s (%s) failed, attempt %d of %d: '
                          '%s', self.queue, job.id, job.name, job.attempts,
                          job.max_attempts, error)
        self._settle(claim, settle)

    def _settle(self, claim, update):
        """``update(queue, job, now)`` in a transaction of its own, if the
        job is still this runner's."""
        def settle(queue, now):
            job = queue.jobs.get(claim.id)
            if job is not None and job.state == states.RUNNING \
                    and job.owner == claim.owner:
                update(queue, job, now)
        self._in_transaction(settle, 'settle %s' % claim.id)

    def _in_transaction(self, fn, what):
        """``fn(queue, now)`` in a transaction of its own (see
        :func:`~cipher.background.durable.in_transaction`)."""
        def in_queue(root, now):
            queue = queuestore.get_queue(root, self.queue)
            return None if queue is None else fn(queue, now)
        return durable.in_transaction(
            self.db, in_queue,
            'cipher.background: %s in queue %s' % (what, self.queue))


def _give_back(queue, job, now):
    """Put a job this runner could not finish back, the attempt not
    counted."""
    job.attempts -= 1
    queue.reschedule(job, now, 0)


def _file_in(queue, job_ids):
    """File the finished jobs ``job_ids`` of ``queue``."""
    for job_id in job_ids:
        job = queue.jobs.get(job_id)
        if job is not None and job.state in states.FINAL_STATES:
            queue.file_finished(job)


def _callable(call, load):
    if call[0] == 'method':
        return getattr(load(call[1]), call[2])
    return durable.resolve(call[1])


def install(db, name=queuestore.DEFAULT_QUEUE):
    """Make the queue ``name`` in ``db`` if it is missing (one commit)."""
    with db.transaction('cipher.background: install queue %s' % name) \
            as conn:
        queuestore.get_queue(conn.root(), name, create=True)


class _LeaseKeeper:
    """Renews the leases of the jobs this process runs: every third of a
    job's lease, its lease is made to end one lease from then.  So a lease
    need not outlast the job's longest run, only the silence of a process
    that died: its jobs are taken again a lease after its last renewal.
    A renewal is a transaction of its own, for the due jobs of one runner,
    that writes the queue's leases alone (never a record, which the job's
    transaction writes: the two never conflict).  A job's renewals end
    when it does (:meth:`release`), or when it is no longer its claim's.

    One thread for the process, started with the first job and asleep
    while none runs: a thread per job cost more than a short job."""

    def __init__(self):
        self._changed = threading.Condition()
        # claim.owner -> (when its renewal is due (monotonic), runner, claim)
        self._held = {}
        self._thread = None

    def hold(self, runner, claim):
        """Renew the lease of ``claim`` (run by ``runner``) from now on."""
        with self._changed:
            self._held[claim.owner] = (
                time.monotonic() + claim.lease / 3, runner, claim)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._keep, daemon=True,
                    name='cipher.background leases')
                self._thread.start()
            self._changed.notify()

    def release(self, claim):
        with self._changed:
            self._held.pop(claim.owner, None)

    def holds(self, claim):
        with self._changed:
            return claim.owner in self._held

    def _keep(self):
        while True:
            with self._changed:
                due = self._take_due()
                while not due:
                    self._changed.wait(self._until_next())
                    due = self._take_due()
            for runner, claims in due.items():
                self._renew(runner, claims)

    def _until_next(self):
        """Seconds until the next renewal is due; None when none is held."""
        if not self._held:
            return None
        return max(0.0, min(when for when, _, _ in self._held.values())
                   - time.monotonic())

    def _take_due(self):
        """{runner: [claims]} of the renewals due now, each one's next
        set a third of its lease on."""
        now = time.monotonic()
        due = {}
        for owner, (when, runner, claim) in list(self._held.items()):
            if when <= now:
                self._held[owner] = (now + claim.lease / 3, runner, claim)
                due.setdefault(runner, []).append(claim)
        return due

    def _renew(self, runner, claims):
        def renew(queue, now):
            lost = []
            for claim in claims:
                job = queue.jobs.get(claim.id)
                if job is None or job.state != states.RUNNING \
                        or job.owner != claim.owner:
                    lost.append(claim)
                elif self.holds(claim):
                    queue.leases[job.id] = now + job.lease
            return lost
        try:
            lost = runner._in_transaction(
                renew, 'renew the lease of %s' % ', '.join(
                    claim.id for claim in claims)) or ()
        except Exception:  # the next renewal may pass
            log.exception('Queue %s: renewing the lease of %s failed',
                          runner.queue, ', '.join(
                              '%s (%s)' % (claim.id, claim.name)
                              for claim in claims))
            return
        for claim in lost:
            self.release(claim)


_leases = _LeaseKeeper()


class _RunningJob:
    """What ``set_progress()``, ``check_cancelled()`` and
    ``current_job()`` see of a running durable job: its status, through
    a connection of its own, read and written a few times a second at
    most, never in the job's transaction."""

    def __init__(self, job_id, runner):
        self.id = job_id
        self.store = self
        self._runner = runner
        self._manager = None
        self._conn = None
        self._last_write = 0.0
        self._last_read = 0.0
        self._status = None

    def _queue(self):
        if self._conn is None:
            self._manager = transaction.TransactionManager()
            self._conn = self._runner.db.open(
                transaction_manager=self._manager)
        self._manager.begin()  # the latest committed state
        return queuestore.get_queue(self._conn.root(), self._runner.queue)

    def get(self, job_id):
        now = time.monotonic()
        if self._status is None or now - self._last_read >= \
                PROGRESS_INTERVAL:
            queue = self._queue()
            self._status = durable.status_of(job_id, queue,
                                             queue.jobs.get(job_id))
            self._manager.abort()
            self._last_read = now
        return self._status

    def cancelled(self):
        """True when a cancel of this job is committed now (read afresh,
        outside the job's transaction, which a cancel never touches)."""
        queue = self._queue()
        try:
            return queue is not None and queue.cancel_requested(self.id)
        finally:
            self._manager.abort()

    def update(self, job_id, progress=None, progress_data=None):
        now = time.monotonic()
        if now - self._last_write < PROGRESS_INTERVAL:
            return
        self._last_write = now
        try:
            self._queue().progress[job_id] = (progress, progress_data)
            self._manager.commit()
        except Exception as exc:  # progress only informs
            retry = self._manager.get().isRetryableError(exc)
            self._manager.abort()
            if not retry:
                raise

    def close(self):
        if self._conn is not None:
            self._manager.abort()
            self._conn.close()
            self._conn = None
