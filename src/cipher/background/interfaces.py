"""The contracts of cipher.background.

These interfaces are the reference documentation: each says what an
implementation guarantees and what it raises.  Every class that claims
one is checked against it with ``zope.interface.verify.verifyObject`` in
the tests.
"""
from zope.interface import Attribute
from zope.interface import Interface


class IRetryPolicy(Interface):
    """Which errors are worth another attempt, and how long to wait first.

    A policy holds settings only; the bookkeeping of one unit lives in the
    object ``begin()`` returns, so one policy serves many threads at once.
    """

    attempts = Attribute(
        'Attempts in all, the first included, for conflicts (>= 1).')
    time_budget = Attribute(
        'Seconds after the first failed attempt after which no conflict '
        'retry starts.')

    def isTransient(error, transaction_manager=None):
        """True when ``error`` is worth retrying in a fresh transaction.

        Transient means a ``transaction.interfaces.TransientError``
        (ZODB's ConflictError and ReadConflictError, ZEO's
        ClientDisconnected) or an error that a data manager joined to the
        manager's current transaction accepts through ``should_retry``.
        Must be asked before the transaction is aborted.
        """

    def isDisconnect(error):
        """True when ``error`` means the storage server is unreachable.

        Such errors are retried with a longer backoff of their own and do
        not use up the conflict attempts.
        """

    def begin():
        """Start the bookkeeping of one unit, at its first failure.

        The result has ``number`` (the attempt running now, from 1),
        ``conflicts`` and ``disconnects`` (retries so far),
        ``backoff(error)`` returning the seconds to wait before the next
        attempt or raising ``RetriesExhausted``, and ``wait(seconds,
        stop_event)`` returning True when a stop interrupted the wait.
        """


class IHost(Interface):
    """The host seam: how one kind of application (plain zope.security,
    Zope with AccessControl, Pyramid) tells who and where background work
    comes from, and how the runner restores it around each unit and job.

    The caller side runs in the request (or script) that asks for work;
    the runner side in the worker's or the pool's thread, inside the
    unit's connection.  The core calls nothing host-specific but these.
    ``cipher.background.host.set_host()`` chooses the host of new work;
    the default is :class:`cipher.background.host.ZopeSecurityHost`.
    """

    name = Attribute("A short name for messages ('zope.security', ...).")

    # -- the caller's side --

    def current_user():
        """The id of the user the caller runs as, or None (no user).
        ConfigurationError when that cannot be told (several users)."""

    def current_site():
        """The site work started here belongs to by default, or None."""

    def transaction_manager():
        """The transaction manager the caller's work commits with when the
        objects at hand do not say (None: the thread's)."""

    def check_user(user, site):
        """Refuse early, before anything is recorded: PrincipalRequired
        when ``user`` is None and ``site`` checks security,
        PrincipalNotFound when a named user cannot be looked up there."""

    def is_site(obj):
        """True when ``obj`` can be the site of background work."""

    def locate(obj):
        """Where the caller's ``obj`` (the site, a persistent argument)
        lives, as a picklable hint handed back to :meth:`load` (Zope: its
        physical path; None where an OID is all :meth:`load` needs)."""

    def not_a_site_message(obj):
        """Why ``obj`` is not a site, and how to make it one in this
        host."""

    # -- the runner's side --

    def load(connection, oid, hint=None):
        """The object ``oid`` of ``connection``, the way user code sees
        objects in this host (Zope: acquisition-wrapped, found through
        ``hint``, what :meth:`locate` said in the caller).  POSKeyError
        or KeyError when it is not there."""

    def find_site(connection, path):
        """The site at ``path`` (a '/'-separated path as the host names
        objects); SiteNotFound naming what was found, NotASite."""

    def find_principal(principal_id, site):
        """With ``site`` (the unit's, or None) loaded and set where it is a
        zope.component site: the principal ``principal_id`` names (None:
        no participation, only where nothing checks security).
        PrincipalNotFound for an unknown id, PrincipalRequired for None
        where security is checked."""

    def check_principal(principal, principal_id):
        """After a ``getPrincipal()`` override: PrincipalNotFound when it
        answered None for a named user where security is checked."""

    def begin_security(principal):
        """Make this thread run as ``principal``; return a token for
        :meth:`end_security`.  The thread has no security of its own."""

    def end_security(token):
        """Undo :meth:`begin_security`: nothing of the principal stays in
        the thread (in zope.security's "previous" slot neither)."""

    def transaction_user(principal_id):
        """The transaction's ``user`` field for work of ``principal_id``,
        written the way this host writes it for a request."""


class IUnitOfWork(Interface):
    """The footing of background work: database, site and principal by
    reference, entered in the runner's thread.

    Holds nothing but picklable references, so it may cross threads (and
    later processes).  It never touches the thread it runs in beyond the
    unit: entering refuses a busy thread (ThreadBusy), and leaving
    restores, in reverse order of setting, the transaction, the
    interaction (and zope.security's "previous interaction" slot), the
    site and the connection, however the block ends.
    """

    db = Attribute('The ZODB database connections are opened from.')
    site_oid = Attribute('OID of the local site to set, or None.')
    site_hint = Attribute("Where the host located the site in the caller "
                          "(IHost.locate), passed back to IHost.load.")
    principal_id = Attribute(
        'Id of the principal the work runs as; SYSTEM to run unchecked on '
        'purpose; None only where no authentication utility is reachable '
        '(an interaction with no participation).')
    retry_policy = Attribute('The IRetryPolicy for transient errors.')

    def entered(on_error=None, slot=None, principal_optional=False,
                runner_thread=False):
        """A context manager that, on entering, begins the thread's
        transaction, opens a connection (or takes the one kept in
        ``slot``), sets the site and begins an interaction for the
        principal; its value (a Scope) has ``connection``, ``site`` and
        ``principal``.

        Raises ThreadBusy (touching nothing) when the thread has a site,
        an interaction or a transaction in progress; SiteNotFound or
        NotASite when the site cannot be loaded; PrincipalNotFound or
        PrincipalRequired when the principal cannot be established;
        DatabaseClosed when no connection can be opened.
        ``on_error(exc)`` sees an exception leaving the block while the
        connection is still open.  ``slot`` (a ConnectionSlot) keeps the
        connection open for the next unit of the same runner;
        ``runner_thread`` skips the busy-thread check for the runner that
        owns the thread.
        """

    def attempt(fn, note=None, user=None):
        """Inside ``entered()``, once: run ``fn()`` in the scope's
        transaction with that note and user, commit, return ``fn``'s
        result.

        On failure the transaction is aborted and the error raised.
        ``fn`` must not commit, abort or begin the transaction itself
        (UnitTransactionEnded, and nothing of it is committed);
        ``transaction.get()`` inside ``fn`` is the unit's transaction.
        A commit that fails after the vote raises OutcomeUnknown.
        """

    def run(fn, note=None, user=None, stop_event=None, on_retry=None,
            on_error=None, slot=None, principal_optional=False,
            runner_thread=False):
        """``entered()`` and ``attempt()``, retried whole.

        A transient error on the way in, in ``fn`` or in the commit
        before the vote leaves the unit (nothing held), waits the policy's
        backoff (``on_retry(attempt_number, error, delay)`` told first;
        Interrupted when ``stop_event`` is set meanwhile) and runs it all
        again.  RetriesExhausted when the policy gives up.  OutcomeUnknown
        is never retried: the commit may have happened.
        """


class IWorkerStatus(Interface):
    """An immutable snapshot of a worker, safe to read from any thread."""

    name = Attribute('The thread name (from the worker description).')
    state = Attribute(
        "One of 'new', 'pending-commit', 'dropped', 'starting', "
        "'waiting', 'working', 'retrying', and the final states 'stopped' "
        "(the loop ended or a stop was asked for), 'crashed' (an error "
        "after which no unit can run: scheduleNextWork() raised, the site "
        "is gone, the database closed) and 'interrupted' (SystemExit or "
        "KeyboardInterrupt in the worker's code).")
    units_done = Attribute('Units that committed.')
    units_failed = Attribute('Units that raised (and were aborted).')
    conflicts_retried = Attribute('Retries after transient errors.')
    units_outcome_unknown = Attribute(
        'Units whose commit failed after the vote (never retried; each '
        'is also counted in units_failed).')
    last_error = Attribute("The last unit's error as text, or None.")
    last_error_time = Attribute('When it happened (a datetime), or None.')
    started = Attribute('When the thread started (a datetime), or None.')
    last_run = Attribute('When the last unit ended (a datetime), or None.')


class IBackgroundWorker(Interface):
    """A thread that loops ``scheduleNextWork()`` / ``doWork()``, each unit
    in the unit-of-work context of the site and user it was made for."""

    site_db = Attribute('The database.')
    site_oid = Attribute('The OID of the site.')
    site_name = Attribute('The name of the site, for messages.')
    user_name = Attribute('The principal id the work runs as, or None.')
    status = Attribute('An IWorkerStatus snapshot, taken at each access.')
    stopped = Attribute('True once a stop was asked for or the loop ended.')

    def scheduleNextWork():
        """Wait until there is work; return True to run a unit, False to
        end the thread.  Use ``wait()`` to wait, so ``stop()`` wakes it.
        An exception ends the thread (logged, state 'crashed')."""

    def doWork():
        """Do one unit of work; runs in its own retried transaction, with
        the site set and an interaction for the user."""

    def doCleanup():
        """Runs after every ``doWork()``, also when it failed, in a
        separate transaction with the site set (and with no interaction
        at all when the user could not be found)."""

    def outcomeUnknown(error):
        """Called when a unit's commit failed after the vote (``error``
        is the OutcomeUnknown): the unit may or may not be in the
        database, and it is not retried.  The default does nothing more
        than the CRITICAL log line written before."""

    def runOnce():
        """One iteration of the loop in the calling thread: schedule, then
        work and clean-up.  Returns False when ``scheduleNextWork()`` said
        to end, True otherwise.  For tests."""

    def wait(seconds):
        """Wait up to ``seconds``; return True when the time passed, False
        as soon as the worker is stopped."""

    def start():
        """Start the thread now.  AlreadyStarted when called twice."""

    def startAfterCommit(transaction_manager=None):
        """Start the thread when the current transaction of
        ``transaction_manager`` (default: the thread's) commits; never if
        it aborts or a savepoint taken before the call is rolled back.
        AlreadyStarted when the worker was started or scheduled
        already."""

    def stop(timeout=None):
        """Ask the loop to end after the current unit, wake a waiting
        worker, and join it for up to ``timeout`` seconds (not when called
        from the worker itself).  Returns True when the thread is no longer
        alive.  Harmless on a worker that never started or already
        ended."""


class IJobStatus(Interface):
    """An immutable snapshot of one job, safe to read from any thread."""

    id = Attribute('The job id: unguessable, never reused.')
    state = Attribute(
        "One of 'pending-commit', 'queued', 'running', 'retrying', the "
        "final states 'succeeded', 'failed', 'cancelled', 'dropped', "
        "'interrupted' (SystemExit or KeyboardInterrupt in the job) and "
        "'outcome-unknown' (its commit failed after the vote: it may or "
        "may not be in the database, and it is not retried), or "
        "'unknown' for an id the store does not know (any more).")
    name = Attribute("The callable's dotted name.")
    principal = Attribute('The id of the principal the job runs as.')
    progress = Attribute('The value of the last set_progress(), or None.')
    progress_data = Attribute('The data of the last set_progress().')
    output = Attribute('What the job printed and logged (the last part).')
    result = Attribute(
        "The callable's return value once succeeded.  A persistent object "
        'in it (also inside lists, tuples, sets and dicts) is replaced by '
        "its OID: the job's connection is not the caller's.")
    error = Attribute("'ExceptionClass: message' once failed, or None.")
    traceback = Attribute('The formatted traceback once failed, or None.')
    attempts = Attribute('Attempts made (more than 1 after conflicts).')
    cancel_requested = Attribute('True once cancel() reached a running job.')
    created = Attribute('When perform() was called (UTC datetime).')
    started = Attribute('When the job started running, or None.')
    finished = Attribute('When the job reached a final state, or None.')
    done = Attribute('True in a final state, and for unknown ids.')


class IJobListing(Interface):
    """The jobs of one place (this process's job store, a durable queue),
    for a page or a script that lists them: the same questions wherever
    a job lives.  Filters are checked first: a state that is no job
    state raises ConfigurationError, a filter of the wrong type
    ArgumentTypeError."""

    def list(state=None, principal=None, name=None, limit=100, site=None):
        """The IJobStatus of the jobs known, newest first (by creation):
        those in ``state`` (a state, or a collection of states), started
        by ``principal`` (a principal id), whose name contains ``name``
        (a substring of the dotted name), on the site at the path
        ``site``; ``limit`` (a whole number >= 1, or None for all) at
        most."""

    def counts(site=None):
        """The number of jobs known in each state (of the site at the path
        ``site``, or all): {state: count}, for the states that have
        any."""

    def get(job_id):
        """The IJobStatus of the job (state 'unknown' if not known)."""


class IJobStore(IJobListing):
    """Where job status lives, outside the ZODB transaction.

    Safe to use from many threads.  Never raises KeyError for an unknown
    id: reads answer a status whose state is 'unknown', writes are
    ignored.  Every change of state goes through ``transition()`` and the
    store's transition table.  Finished jobs are forgotten by age and
    count at all times, so the store does not grow without bound.
    """

    def add(job_id, name, state, principal=None, site=None):
        """Remember a new job in ``state``, started by ``principal`` on the
        site at the path ``site``."""

    def transition(job_id, state, **fields):
        """Move the job to ``state`` and set ``fields``, atomically, if the
        transition table allows it from the job's current state; return
        True if done, False (changing nothing) otherwise.  Entering a
        final state sets ``finished`` and wakes waiters."""

    def update(job_id, expect=None, **fields):
        """Change fields other than the state, atomically; return True if
        done.  Nothing changes (and False is returned) for an unknown or
        finished job, or when ``expect`` (a collection of states) does
        not hold the job's current state."""

    def write(job_id, text):
        """Append ``text`` to the job's output, keeping the last part."""

    def wait(job_id, timeout=None):
        """Block until the job is finished; return its final status.

        Raises WaitTimeout when ``timeout`` seconds pass first.
        """

    def prune():
        """Forget finished jobs beyond the store's age and count limits."""


class IScheduler(Interface):
    """Runs callables in the background and tracks them by task id."""

    stopped = Attribute(
        'True before the first start() and once shutdown() was called.')
    latest_id = Attribute('The id of the task started last, or None.')
    task = Attribute('Mapping task id -> Task(fn, args, kwargs), holding '
                     'the unfinished tasks and the last finished ones (as '
                     'Task(fn, (), {}): their arguments are let go).')
    future = Attribute('Mapping task id -> concurrent.futures.Future.')

    def start(fn, args=(), kwargs=None):
        """Run ``fn(*args, **kwargs)``; return a new task id.

        TypeError for a non-callable, SchedulerShutDown after shutdown()
        (and nothing is started).
        """

    def shutdown(wait=True, cancel_futures=False):
        """Accept no more tasks; with ``cancel_futures``, cancel the ones
        not started yet; with ``wait``, wait for the started ones.
        Harmless when called again."""


class IWorkerFactory(Interface):
    """Declares background workers an application wants running.

    Register one as a named utility; when Zope opens the database
    (``zope.processlifetime.IDatabaseOpenedWithRoot``), the start-up
    subscriber calls every one and starts the workers it returns.
    """

    def __call__(db):
        """Return the (unstarted) workers to run on ``db``: one worker or
        an iterable of workers."""
