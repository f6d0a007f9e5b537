"""The ``cipher-background`` command (also ``python -m cipher.background``).

    cipher-background demo [--db PATH] [--user ID]
    cipher-background worker --zodb URI --site PATH --worker MODULE:CLASS
                             [--user ID | --system] [--threads N]
    cipher-background start NAME -- COMMAND...
    cipher-background stop NAME
    cipher-background status [NAME]

A mistake a user can make is one line on stderr, never a traceback: exit
status 2 for a usage mistake, 1 for a failure.
"""
import argparse
import importlib
import os
import signal
import sys
import threading
import time

from cipher.background.errors import BackgroundError
from cipher.background.errors import CommandError
from cipher.background.host import get_host
from cipher.background.security import SYSTEM

#: Seconds workers get to finish their unit after SIGTERM or SIGINT.
STOP_GRACE_SECONDS = 60


class _UsageError(Exception):
    """A usage mistake reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError('%s (see %s --help)' % (message, self.prog))


# -- demo --

def _demo(args):
    from ZODB import DB
    from ZODB.FileStorage import FileStorage

    from cipher.background import demo
    from cipher.background.jobs import get_progress
    from cipher.background.jobs import wait

    folder = os.path.dirname(os.path.abspath(args.db))
    os.makedirs(folder, exist_ok=True)
    db = DB(FileStorage(args.db))
    try:
        job_id, name = demo.simulated_request(db, args.user)
        print('%s started the publication job for %s after the commit'
              % (args.user, name))
        # Redraw one line on a terminal; elsewhere, a line per change.
        end = '\r' if sys.stdout.isatty() else '\n'
        shown = None
        progress = get_progress(job_id)
        while progress is not None:
            if progress != shown:
                _show_progress(progress, end)
                shown = progress
            time.sleep(0.05)
            progress = get_progress(job_id)
        status = wait(job_id, 60)
        _show_progress((100, status.state), '\n')
        if status.state != 'succeeded':
            raise CommandError('the job %s: %s' % (status.state,
                                                   status.error))
        _print_outcome(db, name)
    finally:
        db.close()
    return 0


def _show_progress(progress, end):
    value, data = progress
    value = max(0, value)
    filled = int(value) * 30 // 100
    sys.stdout.write('[%s%s] %3d%% %-16s%s' % (
        '#' * filled, '.' * (30 - filled), value, data or 'queued', end))
    sys.stdout.flush()


def _print_outcome(db, name):
    conn = db.open()
    try:
        document = conn.root()['site'][name]
        print('%s (%s) is %s; history: %s' % (
            name, document.title, document.state,
            ', '.join('%s by %s' % entry for entry in document.history)))
    finally:
        conn.close()
    print('Transaction history, newest last:')
    for record in list(db.storage.iterator())[-4:]:
        user = record.user.decode('utf-8').split(' ', 1)[-1]
        note = record.description.decode('utf-8').replace('\n', ' / ')
        print('  %-8s %s' % (user or '-', note))


# -- worker --

def _open_database(uri):
    import zodburi
    from ZODB import DB

    try:
        factory, db_kwargs = zodburi.resolve_uri(uri)
    except Exception as exc:
        raise CommandError('cannot use --zodb %r: %s; use a URI such as '
                           'file:///path/Data.fs or zeo://host:port'
                           % (uri, exc))
    if uri.startswith('file://'):
        path = uri[len('file://'):].split('?', 1)[0]
        if not os.path.exists(path):
            raise CommandError('no database file at %s; check --zodb'
                               % path)
    try:
        return DB(factory(), **db_kwargs)
    except Exception as exc:
        raise CommandError('cannot open the database %s: %s' % (uri, exc))


def _worker_class(spec):
    from cipher.background.thread import BackgroundWorkerThread

    module_name, _, class_name = spec.partition(':')
    if not module_name or not class_name:
        raise _UsageError('--worker takes MODULE:CLASS, not %r' % spec)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise CommandError('cannot import the worker %s: %s' % (spec, exc))
    if not (isinstance(cls, type) and issubclass(cls,
                                                 BackgroundWorkerThread)):
        raise CommandError('%s is not a BackgroundWorkerThread subclass'
                           % spec)
    return cls


def _worker(args):
    if args.threads < 1:
        raise _UsageError('--threads must be at least 1')
    cls = _worker_class(args.worker)
    db = _open_database(args.zodb)
    try:
        conn = db.open()
        try:
            site = get_host().find_site(conn, args.site)
            user = SYSTEM if args.system else args.user
            workers = [cls.forSite(site, user, daemon=True)
                       for _ in range(args.threads)]
        finally:
            conn.close()
        stop = threading.Event()
        handlers = {signum: signal.signal(signum, lambda *a: stop.set())
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in workers:
                worker.start()
            print('cipher-background: %d worker(s) %s running on %s'
                  % (len(workers), args.worker, args.zodb), file=sys.stderr)
            while not stop.is_set() and any(w.is_alive() for w in workers):
                stop.wait(1.0)
        finally:
            for worker in workers:
                worker.stop()  # ask all first, then wait for each
            for worker in workers:
                worker.stop(STOP_GRACE_SECONDS)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    finally:
        db.close()
    return 0


# -- named background processes --

def _start(args):
    from cipher.background import process
    command = args.command[1:] if args.command[:1] == ['--'] \
        else args.command
    if not command:
        raise _UsageError('start needs a command: start NAME -- COMMAND...')
    if process.run_in_background(args.name, command,
                                 rundir=args.rundir) is None:
        print('%s is already running' % args.name)
    else:
        print('started %s' % args.name)
    return 0


def _stop(args):
    from cipher.background import process
    if process.kill(args.name, rundir=args.rundir):
        print('stopped %s' % args.name)
    else:
        print('%s was not running' % args.name)
    return 0


def _status(args):
    from cipher.background import process
    names = [args.name] if args.name else process.names(args.rundir)
    running = False
    for name in names:
        status = process.status(name, rundir=args.rundir)
        command = ' '.join(status.command or ())
        if status.problem:
            print('%s: unknown: %s' % (name, status.problem))
        elif status.running:
            running = True
            print('%s: running, pid %d: %s' % (name, status.pid, command))
        elif status.returncode is not None:
            print('%s: stopped, exit status %d: %s'
                  % (name, status.returncode, command))
        else:
            print('%s: not running' % name)
    # As init scripts do: 3 when the one process asked about is not running.
    return 0 if running or not args.name else 3


def _parser():
    parser = _Parser(
        prog='cipher-background',
        description='Background work for Zope and ZODB applications.')
    commands = parser.add_subparsers(dest='command_name', metavar='COMMAND',
                                     parser_class=_Parser)
    demo = commands.add_parser(
        'demo', help='run the publication example on a FileStorage',
        description='Create a site with a local publisher and a draft '
        'document in a FileStorage (if missing), start the publication job '
        'from a simulated request after its commit, show its progress, '
        "then print the document's state and the transaction history.")
    demo.add_argument('--db', default=os.path.join('var', 'Data.fs'),
                      metavar='PATH',
                      help='the FileStorage file (default: %(default)s)')
    demo.add_argument('--user', default='editor',
                      help='the user of the simulated request '
                      '(default: %(default)s)')
    demo.set_defaults(run=_demo)

    worker = commands.add_parser(
        'worker', help='run worker threads in this process',
        description='Run background workers against the database a URI '
        'names, until SIGTERM or SIGINT (then the current units finish, '
        'connections and the database are closed, exit status 0).')
    worker.add_argument('--zodb', required=True, metavar='URI',
                        help='file://, zeo://, memory:// or zconfig:// URI')
    worker.add_argument('--site', required=True, metavar='PATH',
                        help='path of the site from the root, e.g. /site')
    worker.add_argument('--worker', required=True, metavar='MODULE:CLASS',
                        help='a BackgroundWorkerThread subclass')
    who = worker.add_mutually_exclusive_group()
    who.add_argument('--user', default=None, metavar='ID',
                     help='principal id to run as (required where the site '
                          'checks security)')
    who.add_argument('--system', action='store_true',
                     help='run unchecked, as the system user, on purpose')
    worker.add_argument('--threads', type=int, default=1, metavar='N',
                        help='how many workers (default: 1)')
    worker.set_defaults(run=_worker)

    for name, run, help in [('start', _start, 'start a named process'),
                            ('stop', _stop, 'stop a named process'),
                            ('status', _status, 'show named processes')]:
        sub = commands.add_parser(name, help=help, description=help + '.')
        if name == 'status':
            sub.add_argument('name', nargs='?', metavar='NAME')
        else:
            sub.add_argument('name', metavar='NAME')
        if name == 'start':
            sub.add_argument('command', nargs=argparse.REMAINDER,
                             metavar='-- COMMAND...')
        sub.add_argument('--rundir', default=None, metavar='DIR',
                         help='where pid and log files live (default: '
                         '$CIPHER_BACKGROUND_RUNDIR or a per-user folder)')
        sub.set_defaults(run=run)
    return parser


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, 'run', None) is None:
            raise _UsageError('name a command: demo, worker, start, stop or '
                              'status (see cipher-background --help)')
        return args.run(args)
    except _UsageError as exc:
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 2
    except (CommandError, BackgroundError, OSError) as exc:
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 1
