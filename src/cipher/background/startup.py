"""Zope start-up wiring: start the workers an application declares when
the database opens, stop them at process exit.

An application registers :class:`SiteWorkers`, :class:`QueueWorkers` (or
any IWorkerFactory) as a named utility, in Python or in ZCML::

    <utility name="indexer"
             provides="cipher.background.interfaces.IWorkerFactory"
             component="myapp.workers.indexer_workers" />

and includes ``cipher.background``'s ``configure.zcml``, which subscribes
:func:`startWorkers` to ``IDatabaseOpenedWithRoot``.  Live workers are
stopped at interpreter exit by :mod:`cipher.background.thread`;
:func:`stopWorkers` stops the ones started here earlier.
"""
import logging
import os
import threading
import time

from zope.component import adapter
from zope.component import getUtilitiesFor
from zope.interface import implementer
from zope.processlifetime import IDatabaseOpenedWithRoot

from cipher.background.errors import ConfigurationError
from cipher.background.host import get_host
from cipher.background.interfaces import IWorkerFactory
from cipher.background.thread import EXIT_GRACE_SECONDS

log = logging.getLogger(__name__)

_started = []
_started_lock = threading.Lock()

#: The environment variable that decides, per process, whether
#: startWorkers() starts anything: 'on' or 'off' (also 1/0, yes/no,
#: true/false).  Unset: on, unless the host said otherwise (Zope: off in
#: ``zconsole``, or ``start-workers off`` in its product-config).
ENVIRONMENT_SWITCH = 'CIPHER_BACKGROUND_START_WORKERS'
_ON = ('on', '1', 'yes', 'true')
_OFF = ('off', '0', 'no', 'false')
_host_says_off = []  # the reason a host gave, if any


def skip_startup_workers(reason):
    """Make startWorkers() start nothing in this process, for ``reason``
    (a host's own setting: Zope's product-config, zconsole); the
    environment variable, when set, still decides."""
    _host_says_off[:] = [reason]


def _reason_not_to_start():
    """Why start-up workers do not start in this process, or None."""
    value = os.environ.get(ENVIRONMENT_SWITCH, '').strip().lower()
    if value in _ON:
        return None
    if value in _OFF:
        return '%s=%s' % (ENVIRONMENT_SWITCH, value)
    if value:
        log.warning('%s=%r is neither on nor off; taken as on',
                    ENVIRONMENT_SWITCH, value)
        return None
    return _host_says_off[0] if _host_says_off else None


@implementer(IWorkerFactory)
class SiteWorkers:
    """``count`` workers of ``worker_class`` for the site at ``site_path``
    (a path as the host names objects: from the database root, such as
    ``/site``; in Zope from the application), as ``user_name``.
    Further keyword arguments go to the worker class."""

    def __init__(self, worker_class, site_path, user_name=None, count=1,
                 **kwargs):
        if not isinstance(count, int) or count < 1:
            raise ConfigurationError(
                'count must be a whole number >= 1, not %r' % (count,))
        self.worker_class = worker_class
        self.site_path = site_path
        self.user_name = user_name
        self.count = count
        self.kwargs = kwargs

    def __repr__(self):
        return '<SiteWorkers %d x %s for %s>' % (
            self.count, self.worker_class.__name__, self.site_path)

    def __call__(self, db):
        conn = db.open()
        try:
            site = get_host().find_site(conn, self.site_path)
            return [self.worker_class.forSite(site, self.user_name,
                                              **self.kwargs)
                    for _ in range(self.count)]
        finally:
            conn.close()


@implementer(IWorkerFactory)
class QueueWorkers:
    """A :class:`~cipher.background.queuerunner.QueueRunner` serving the
    durable jobs of ``queue`` with ``threads`` threads of this process
    (the web process of a single-process site).  Further keyword
    arguments go to the runner."""

    def __init__(self, queue='default', threads=2, **kwargs):
        self.queue = queue
        self.threads = threads
        self.kwargs = kwargs

    def __repr__(self):
        return '<QueueWorkers %d x queue %s>' % (self.threads, self.queue)

    def __call__(self, db):
        from cipher.background.queuerunner import QueueRunner
        return QueueRunner(db, self.queue, threads=self.threads,
                           **self.kwargs)


@adapter(IDatabaseOpenedWithRoot)
def startWorkers(event):
    """Start the workers of every registered IWorkerFactory.

    A factory that fails is logged and skipped: the application starts
    anyway.  Nothing starts when the process is switched off (the
    environment variable :data:`ENVIRONMENT_SWITCH`, or the host).
    """
    reason = _reason_not_to_start()
    if reason is not None:
        log.info('Start-up workers not started in this process (%s)',
                 reason)
        return
    for name, factory in sorted(getUtilitiesFor(IWorkerFactory)):
        try:
            workers = factory(event.database)
            if hasattr(workers, 'start'):  # one worker
                workers = [workers]
            for worker in workers:
                worker.start()
                with _started_lock:
                    _started.append(worker)
                log.info('Started %s', worker.name)
        except Exception:
            log.exception('Could not start the background workers %r (%r)',
                          name, factory)


def startedWorkers():
    """The workers startWorkers() started that are still alive."""
    with _started_lock:
        _started[:] = [w for w in _started if w.is_alive()]
        return list(_started)


def stopWorkers(timeout=EXIT_GRACE_SECONDS):
    """Stop the workers startWorkers() started; return those still alive."""
    with _started_lock:
        workers, _started[:] = list(_started), []
    for worker in workers:
        worker.stop(0)  # ask all first, then wait for each
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.stop(max(0.0, deadline - time.monotonic()))
    return [w for w in workers if w.is_alive()]
