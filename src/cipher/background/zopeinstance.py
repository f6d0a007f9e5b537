"""The life of a Zope instance, for background work: what happens when
the instance opens its database, starts serving and stops.

Registered by ``zope.zcml`` (included by the library's ``configure.zcml``
when ``Products.Five`` is importable):

* :func:`database_opened` (IDatabaseOpenedWithRoot, before start-up
  workers start): :class:`~cipher.background.zope.ZopeHost` becomes the
  host of new work, ``db.close()`` stops the work first (runwsgi closes
  its databases when it stops, before the interpreter's exit hooks and
  with no event), and start-up workers are switched off where the
  product-config or ``zconsole`` says so;
* :func:`process_starting` (IProcessStarting): SIGTERM, what systemd,
  supervisord and Docker send and which ended runwsgi at once with
  nothing closed, ends it the way Ctrl-C does (SystemExit in the main
  thread), so the work stops before the database closes; not where
  somebody else handles SIGTERM, and not with ``stop-on-sigterm off``.
"""
import logging
import signal
import sys
import threading

import transaction

from cipher.background import shutdown
from cipher.background import startup
from cipher.background.errors import ConfigurationError
from cipher.background.host import set_host
from cipher.background.zope import APPLICATION
from cipher.background.zope import ZopeHost
from cipher.background.zope import product_config

log = logging.getLogger(__name__)


def started_by_zconsole():
    """True in ``zconsole run`` and ``zconsole debug``, whose start-up is
    the very one of runwsgi: only the entry point tells them apart."""
    return 'Zope2.utilities.zconsole' in sys.modules


def _startup_workers_setting():
    value = str(product_config().get('start-workers', 'on')).strip().lower()
    if value not in ('on', 'off', 'always'):
        raise ConfigurationError(
            '<product-config cipher.background> start-workers must be on, '
            'off or always, not %r' % (value,))
    if value == 'off':
        return 'start-workers off in zope.conf'
    if value == 'on' and started_by_zconsole():
        return "zconsole (say 'start-workers always' to start them there)"
    return None


def stop_before_close(db, timeout=None):
    """Make ``db.close()`` stop all background work first, within
    ``timeout`` seconds (default: EXIT_GRACE_SECONDS).

    runwsgi closes its databases when the server returns (Ctrl-C, or
    SystemExit), in the main thread, before the interpreter's exit hooks
    and with no event: the instance's own ``close`` is the one place that
    runs before.
    """
    if timeout is None:
        timeout = shutdown.EXIT_GRACE_SECONDS
    close = db.close
    if getattr(close, 'stops_background_work', False):
        return

    def stop_then_close():
        try:
            log.info('Stopping background work before the database closes')
            alive = shutdown.stop_all(timeout)
            if alive:
                log.warning('Still running after %ss, the database closes '
                            'under them: %r', timeout, alive)
        finally:
            close()
    stop_then_close.stops_background_work = True
    db.close = stop_then_close


def _is_zope_database(db):
    manager = transaction.TransactionManager()  # the thread's is not ours
    connection = db.open(manager)
    try:
        return APPLICATION in connection.root()
    finally:
        manager.abort()
        connection.close()


_opened_here = []  # the Zope databases this process opened


def database_opened(event):
    """On IDatabaseOpenedWithRoot, before start-up workers start, for the
    database of a Zope application: Zope's host for new work, work
    stopped before the database closes, and the start-up workers' switch
    for this process.  Another database (an application that is not Zope
    in a Python where Zope is installed) is left alone."""
    if not _is_zope_database(event.database):
        return
    _opened_here.append(event.database)
    set_host(ZopeHost())
    stop_before_close(event.database)
    reason = _startup_workers_setting()
    if reason is not None:
        startup.skip_startup_workers(reason)


def _sigterm(signum, frame):
    raise SystemExit('SIGTERM')


def stop_on_sigterm():
    """Make SIGTERM end this process as Ctrl-C does (SystemExit in the main
    thread, so runwsgi closes its databases, and the work stops first).
    Only in the main thread and when nobody handles SIGTERM yet; returns
    True when installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _sigterm)
    return True


def process_starting(event):
    """On IProcessStarting (runwsgi's server is about to serve): SIGTERM
    stops the work before the database closes, unless the product-config
    says ``stop-on-sigterm off``; never in zconsole."""
    if not _opened_here or started_by_zconsole():
        return
    value = str(product_config().get('stop-on-sigterm', 'on')).strip().lower()
    if value not in ('on', 'off'):
        raise ConfigurationError(
            '<product-config cipher.background> stop-on-sigterm must be on '
            'or off, not %r' % (value,))
    if value == 'on':
        stop_on_sigterm()
