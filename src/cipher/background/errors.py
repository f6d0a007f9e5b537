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


class PrincipalNotFound(BackgroundError, LookupError):
    """The principal id of a unit is unknown to the site's authentication.

    The unit fails (it never runs with an unchecked interaction); a
    worker logs it and goes on with its next unit.
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


class NotInJob(BackgroundError, RuntimeError):
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
