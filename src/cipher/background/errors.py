"""The one exception tree of cipher.background.

Every exception the library raises on purpose derives from
:class:`BackgroundError`.  Where a Python built-in describes the kind of
mistake as well (a bad value, a missing thing, a call at the wrong time),
the class derives from that built-in too, so ``except ValueError`` in
existing code keeps catching it.

Each message names the bad value and says what to do about it.
"""


class BackgroundError(Exception):
    """The root: catch this to catch anything cipher.background raises."""


class ConfigurationError(BackgroundError, ValueError):
    """A worker, job or scheduler was given an argument it cannot use.

    Raised at the call, in the caller's thread, before anything starts or
    is written: an object that is not stored in a database, a site that is
    not a site, a non-positive interval, a negative pool size.
    """


class SiteNotFound(BackgroundError, LookupError):
    """The site OID a worker or job was given names no object in the database.

    Raised by ``start()`` when the site can be checked then, and inside
    the runner (where it ends the worker, because every unit would fail)
    when the site disappeared later.
    """


class NotASite(ConfigurationError):
    """The object a worker or job was told to use as its site is no site.

    A site is an object providing ``zope.component.interfaces.ISite``,
    that is, one with a local site manager.
    """


class ArgumentTypeError(ConfigurationError, TypeError):
    """An argument of the wrong type: a callable that is not callable, a
    user id that is not a string, a timeout that is not a number.

    Raised at the call, before anything starts or is written.
    """


class PrincipalNotFound(BackgroundError, LookupError):
    """The principal id of a unit is unknown to the site's authentication,
    or no authentication utility is reachable to look it up.

    The unit fails (it never runs with an unchecked interaction); a
    worker logs it and backs off before its next unit.
    """


class PrincipalRequired(PrincipalNotFound):
    """Work was started without a user on a site that checks security.

    With an authentication utility in reach, work without a named user
    would run with every permission.  Name the user (``user_name=`` for
    workers, ``user=`` for jobs, ``--user`` on the command line), or run
    as :data:`cipher.background.SYSTEM` to run unchecked on purpose.
    """


class ThreadBusy(BackgroundError, RuntimeError):
    """A unit of work was to run in a thread that is busy with other work:
    a local site is set, an interaction is active, or a transaction is in
    progress.

    Nothing was touched.  Commit or abort the transaction, end the
    interaction and reset the site first, or run the work in a thread of
    its own (``start()``, ``perform()``).
    """


class UnitTransactionEnded(BackgroundError, RuntimeError):
    """User code committed, aborted or began the unit's transaction itself.

    The unit owns its transaction: it commits it once, with the unit's
    user and note, and retries it whole on conflicts.  A commit inside
    ``doWork()`` or a job would split the unit, so it is refused before
    anything is written and the unit fails.  Use
    ``transaction.savepoint()`` for partial rollbacks, and smaller units
    (one per ``scheduleNextWork()``, one per job) for partial progress.
    """


class OutcomeUnknown(BackgroundError):
    """The commit of a unit failed after the vote (in ``tpc_finish``): the
    storage may or may not have recorded it.

    Never retried, because running the unit again could apply it twice.
    Logged once at CRITICAL; the worker counts it and calls its
    ``outcomeUnknown()`` hook, a job ends in state ``outcome-unknown``.
    ``error`` is the original exception (also chained as ``__cause__``).
    """

    def __init__(self, name, error):
        self.error = error
        super().__init__(
            'the commit of %s failed after the vote (%s: %s); the storage '
            'may or may not have recorded it, so it is not retried. Check '
            'the database before doing the work again.' % (
                name, type(error).__name__, error))


class DatabaseClosed(BackgroundError, RuntimeError):
    """The database of a worker or job was closed: no unit can run any
    more.  A worker ends in state ``crashed``.
    """


class AlreadyStarted(BackgroundError, RuntimeError):
    """``start()`` or ``startAfterCommit()`` was called on a started worker.

    A thread runs once; create a new worker to run the work again.
    """


class RetriesExhausted(BackgroundError):
    """A unit kept failing with transient errors until the retry policy
    gave up: attempts used up or time budget spent.

    ``attempts`` is the number of attempts made, ``last_error`` the last
    transient error (also chained as ``__cause__``).
    """

    def __init__(self, attempts, last_error, reason='attempts used up'):
        self.attempts = attempts
        self.last_error = last_error
        self.reason = reason
        super().__init__(
            'gave up after %d attempt%s (%s); last conflict: %s: %s. '
            'Make the unit shorter or touch fewer shared objects, or give '
            'the worker a RetryPolicy with more attempts.' % (
                attempts, '' if attempts == 1 else 's', reason,
                type(last_error).__name__, last_error))


class Interrupted(BackgroundError):
    """A stop was requested while a unit waited to be retried.

    The unit was aborted and is not run again; the runner ends normally.
    """


class SchedulerShutDown(BackgroundError, RuntimeError):
    """Work was handed to a scheduler after ``shutdown()``.

    Nothing was queued.  Create a new scheduler to run more work.
    """


class JobCancelled(BackgroundError):
    """Raised inside a job, by ``set_progress()`` or ``check_cancelled()``,
    once somebody asked to cancel it.

    Let it propagate: the job's transaction is aborted and its status
    becomes ``cancelled``.
    """


class NotInUnit(BackgroundError, RuntimeError):
    """A function that works only inside a running unit of work (a
    worker's ``doWork()``, a job) was called outside of one, for example
    ``current_connection()`` from a view.
    """


class NotInJob(NotInUnit):
    """A function that works only inside a running job was called outside
    of one (for example ``set_progress()`` from a view).
    """


class ObjectNotStored(BackgroundError, ValueError):
    """A persistent object handed to background work has no database
    identity: it was never added to the database, or the transaction that
    added it aborted.
    """


class WaitTimeout(BackgroundError, TimeoutError):
    """A wait ended before the thing waited for happened: a job that did
    not finish within ``wait()``'s timeout, or an object that
    ``wait_for()`` did not find within its tries.
    """


class ProcessStartError(BackgroundError, OSError):
    """The supervisor could not start the command (it exists, but could
    not be executed); nothing is left running."""


class BadProcessFile(BackgroundError, ValueError):
    """A pid file of the run directory is not one this library wrote, or
    names a process that is not the one it started: nothing is signalled
    through it."""


class CommandError(BackgroundError):
    """A failure of the ``cipher-background`` command, reported as one
    line on stderr with exit status 1."""
