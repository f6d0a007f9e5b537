"""Zope start-up wiring: start the workers an application declares when
the database opens, stop them at process exit.

An application registers :class:`SiteWorkers` (or any IWorkerFactory) as a
named utility, in Python or in ZCML::

    <utility name="indexer" provides="cipher.background.interfaces.IWorkerFactory"
             component="myapp.workers.indexer_workers" />

and includes ``cipher.background``'s ``configure.zcml``, which subscribes
:func:`startWorkers` to ``IDatabaseOpenedWithRoot``.  Live workers are
stopped at interpreter exit by :mod:`cipher.background.thread`;
:func:`stopWorkers` stops the ones started here earlier.
"""
import logging
import threading

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


@adapter(IDatabaseOpenedWithRoot)
def startWorkers(event):
    """Start the workers of every registered IWorkerFactory.

    A factory that fails is logged and skipped: the application starts
    anyway.
    """
    for name, factory in sorted(getUtilitiesFor(IWorkerFactory)):
        try:
            workers = factory(event.database)
            if isinstance(workers, threading.Thread):
                workers = [workers]
            for worker in workers:
                worker.start()
                with _started_lock:
                    _started.append(worker)
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
        worker.stop()
    for worker in workers:
        worker.stop(timeout)
    return [w for w in workers if w.is_alive()]
