"""The ``worker`` and ``jobs`` commands (private): workers or a queue
runner in this process until SIGTERM, SIGINT or SIGHUP, with an exit
status that tells a supervisor whether to restart them."""
import signal
import sys
import threading
import time

from cipher.background._cliopen import UsageError
from cipher.background._cliopen import add_working_directory
from cipher.background._cliopen import one_line
from cipher.background._cliopen import open_database
from cipher.background._cliopen import worker_class
from cipher.background.host import get_host
from cipher.background.security import SYSTEM


#: Seconds workers get to finish their unit after SIGTERM or SIGINT.
STOP_GRACE_SECONDS = 60


def _make_workers(db, cls, args):
    """The workers, made once the site and the user were found as a unit
    of work finds them (else a usage error, exit status 2, nothing
    started)."""
    from cipher.background.context import UnitOfWork
    from cipher.background.errors import NotASite
    from cipher.background.errors import PrincipalNotFound
    from cipher.background.errors import SiteNotFound

    user = SYSTEM if args.system else args.user
    try:
        conn = db.open()
        try:
            site = get_host().find_site(conn, args.site)
            unit = UnitOfWork.capture(site=site, db=db, user=user)
            try:
                workers = [cls.forSite(site, user, daemon=True)
                           for _ in range(args.threads)]
            except (SiteNotFound, NotASite, PrincipalNotFound):
                raise
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                raise UsageError('cannot make the worker %s: %s: %s' % (
                    args.worker, type(exc).__name__, one_line(exc)))
        finally:
            conn.close()
        with unit.entered():
            pass  # the principal is looked up on the way in
    except (SiteNotFound, NotASite, PrincipalNotFound) as exc:
        raise UsageError(one_line(exc))
    return workers


#: The signals that stop the workers gracefully.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_worker(args):
    if args.threads < 1:
        raise UsageError('--threads must be at least 1')
    cls = worker_class(args.worker)
    db = open_database(args.zodb, args.connect_timeout)
    workers = []
    try:
        workers = _make_workers(db, cls, args)
        stop = threading.Event()
        handlers = {signum: signal.signal(signum, lambda *a: stop.set())
                    for signum in _STOP_SIGNALS}
        try:
            for worker in workers:
                worker.start()
            print('cipher-background: %d worker(s) %s running on %s'
                  % (len(workers), args.worker, args.zodb.split('?', 1)[0]),
                  file=sys.stderr, flush=True)
            while not stop.is_set() and any(w.is_alive() for w in workers):
                stop.wait(1.0)
        finally:
            for worker in workers:
                worker.stop(0)  # ask all first, then wait for each
            deadline = time.monotonic() + args.grace
            for worker in workers:
                worker.stop(max(0, deadline - time.monotonic()))
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    finally:
        if not any(worker.is_alive() for worker in workers):
            db.close()  # never under a live worker
    alive = [worker for worker in workers if worker.is_alive()]
    return _worker_exit_status(workers, alive, args.grace)


def _worker_exit_status(workers, alive, grace):
    """0 when every worker stopped or ended cleanly; else 1, with a line
    on stderr per worker that crashed or outlived the grace time."""
    failed = False
    for worker in alive:
        print('cipher-background: error: %s did not stop within %s s; the '
              'database was left open' % (worker.name, grace),
              file=sys.stderr)
        failed = True
    for worker in workers:
        status = worker.status
        if status.state in ('crashed', 'interrupted'):
            print('cipher-background: error: %s %s: %s'
                  % (worker.name, status.state, status.last_error),
                  file=sys.stderr)
            failed = True
    return 1 if failed else 0


def run_jobs(args):
    from cipher.background.queuerunner import QueueRunner

    if args.threads < 1:
        raise UsageError('--threads must be at least 1')
    if args.poll <= 0:
        raise UsageError('--poll must be more than 0 seconds')
    add_working_directory()  # job functions are imported by name
    db = open_database(args.zodb, args.connect_timeout)
    stopped = False
    try:
        runner = QueueRunner(db, args.queue, threads=args.threads,
                             poll=args.poll,
                             max_poll=max(args.poll, args.max_poll))
        stop = threading.Event()
        handlers = {signum: signal.signal(signum, lambda *a: stop.set())
                    for signum in _STOP_SIGNALS}
        try:
            runner.start()
            print('cipher-background: %d thread(s) serving the queue %s of %s'
                  % (args.threads, args.queue, args.zodb.split('?', 1)[0]),
                  file=sys.stderr, flush=True)
            stop.wait()
        finally:
            stopped = runner.stop(args.grace)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    finally:
        if stopped:
            db.close()  # never under a running job
    if not stopped:
        print('cipher-background: error: jobs did not finish within %s s; '
              'the database was left open (their leases will run out)'
              % args.grace, file=sys.stderr)
        return 1
    return 0
