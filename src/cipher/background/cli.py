"""The ``cipher-background`` command (also ``python -m cipher.background``).

    cipher-background demo [--db PATH] [--user ID]
    cipher-background worker --zodb URI --site PATH --worker MODULE:CLASS
                             [--user ID | --system] [--threads N]
                             [--grace SECONDS] [--connect-timeout SECONDS]
    cipher-background jobs --zodb URI [--queue NAME] [--threads N]
                           [--poll SECONDS] [--max-poll SECONDS]
                           [--grace SECONDS]
                           [--connect-timeout SECONDS]
    cipher-background start NAME -- COMMAND...
    cipher-background stop NAME [--timeout SECONDS] [--kill]
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
from cipher.background.errors import BadProcessFile
from cipher.background.errors import CommandError
from cipher.background.errors import ConfigurationError
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
    from zope.authentication.interfaces import PrincipalLookupError

    try:
        from cipher.background import demo
    except ImportError as exc:
        raise CommandError("the demo needs its extra (%s): pip install "
                           "'cipher.background[demo]'" % exc)
    from cipher.background.jobs import get_progress
    from cipher.background.jobs import wait

    folder = os.path.dirname(os.path.abspath(args.db))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise CommandError('cannot create the folder of --db %s: %s'
                           % (args.db, exc.strerror))
    db = DB(_open_file_storage(args.db))
    try:
        try:
            job_id, name = demo.simulated_request(db, args.user)
        except PrincipalLookupError:
            raise CommandError(
                'no user %r in the demo site of %s (its users are made with '
                'the site): use --user editor, or a new --db'
                % (args.user, args.db))
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


def _check_file_storage(path, option):
    """A usage error unless ``path`` is a FileStorage file, or nothing yet
    (checked before FileStorage makes its .lock, .tmp and .index files
    beside it)."""
    if not path:
        raise _UsageError('%s needs a file name' % option)
    if not os.path.exists(path):
        return
    if not os.path.isfile(path):
        raise _UsageError('%s %s is not a regular file' % (option, path))
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic and magic not in _FILE_STORAGE_MAGIC:
        raise _UsageError('%s %s is not a FileStorage file (it does not '
                          'start with FS21 or FS30)' % (option, path))


#: The first bytes of a FileStorage file (ZODB 5 and 6 on Python 3, and
#: older files).
_FILE_STORAGE_MAGIC = (b'FS30', b'FS21')


def _open_file_storage(path):
    from zc.lockfile import LockError
    from ZODB.FileStorage import FileStorage

    _check_file_storage(path, '--db')
    made = _files_beside(path)
    try:
        return FileStorage(path)
    except LockError:
        raise CommandError('%s is in use by another process (a Zope '
                           'instance, a ZEO server or a worker): stop it, '
                           'or use another --db' % path)
    except Exception as exc:
        _remove_new(made)
        raise _UsageError('cannot open %s as a FileStorage: %s: %s'
                          % (path, type(exc).__name__, _one_line(exc)))


def _files_beside(path):
    """The files FileStorage makes beside ``path`` that are not there yet
    (to remove when opening fails)."""
    return [path + suffix for suffix in ('.lock', '.tmp', '.index')
            if not os.path.exists(path + suffix)]


def _remove_new(paths):
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


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

def _open_database(uri, connect_timeout=None):
    import zodburi
    from zc.lockfile import LockError
    from ZEO.Exceptions import ClientDisconnected
    from ZODB import DB

    if uri.startswith('zeo://') and connect_timeout is not None:
        uri = _with_wait_timeout(uri, connect_timeout)
    try:
        factory, db_kwargs = zodburi.resolve_uri(uri)
    except Exception as exc:
        raise _UsageError('cannot use --zodb %r: %s; use a URI such as '
                          'file:///path/Data.fs or zeo://host:port'
                          % (uri, _one_line(exc)))
    if uri.startswith('file://'):
        path = uri[len('file://'):].split('?', 1)[0]
        if not os.path.exists(path):
            raise _UsageError('no database file at %s; check --zodb'
                              % path)
        _check_file_storage(path, '--zodb')
        made = _files_beside(path)
    server = None
    if uri.startswith('zeo://'):
        server = uri[len('zeo://'):].split('?', 1)[0]
        print('cipher-background: connecting to the ZEO server at %s '
              '(waiting up to %s s: --connect-timeout)'
              % (server, connect_timeout), file=sys.stderr, flush=True)
    try:
        return DB(factory(), **db_kwargs)
    except ClientDisconnected as exc:
        raise CommandError('no ZEO server answered at %s within %s s (%s); '
                           'start it, or check --zodb'
                           % (server, connect_timeout, _one_line(exc)))
    except Exception as exc:
        if uri.startswith('file://') and not isinstance(exc, LockError):
            _remove_new(made)
            raise _UsageError('cannot open the database %s: %s: %s' % (
                uri.split('?', 1)[0], type(exc).__name__, _one_line(exc)))
        raise CommandError('cannot open the database %s: %s'
                           % (uri.split('?', 1)[0], _one_line(exc)))


def _with_wait_timeout(uri, seconds):
    """``uri`` with ZEO's ``wait_timeout`` set to ``seconds`` (whole
    seconds, as zodburi takes them), replacing any given in the URI."""
    from urllib.parse import parse_qsl
    from urllib.parse import urlencode
    base, _, query = uri.partition('?')
    params = [(key, value) for key, value in parse_qsl(query)
              if key != 'wait_timeout']
    params.append(('wait_timeout', str(seconds)))
    return base + '?' + urlencode(params)


def _one_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _worker_class(spec):
    from cipher.background.thread import BackgroundWorkerThread

    module_name, _, class_name = spec.partition(':')
    if not module_name or not class_name:
        raise _UsageError('--worker takes MODULE:CLASS, not %r' % spec)
    # As `celery` and `gunicorn` do: a module in the current directory
    # is found without PYTHONPATH.
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        raise _UsageError('cannot import the worker %s: %s: %s' % (
            spec, type(exc).__name__, _one_line(exc)))
    if not (isinstance(cls, type) and issubclass(cls,
                                                 BackgroundWorkerThread)):
        raise _UsageError('%s is not a BackgroundWorkerThread subclass'
                          % spec)
    return cls


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
                raise _UsageError('cannot make the worker %s: %s: %s' % (
                    args.worker, type(exc).__name__, _one_line(exc)))
        finally:
            conn.close()
        with unit.entered():
            pass  # the principal is looked up on the way in
    except (SiteNotFound, NotASite, PrincipalNotFound) as exc:
        raise _UsageError(_one_line(exc))
    return workers


#: The signals that stop the workers gracefully.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _worker(args):
    if args.threads < 1:
        raise _UsageError('--threads must be at least 1')
    cls = _worker_class(args.worker)
    db = _open_database(args.zodb, args.connect_timeout)
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


# -- durable jobs --

def _jobs(args):
    from cipher.background.queuerunner import QueueRunner

    if args.threads < 1:
        raise _UsageError('--threads must be at least 1')
    if args.poll <= 0:
        raise _UsageError('--poll must be more than 0 seconds')
    # Job functions are imported by name: from the current directory too.
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    db = _open_database(args.zodb, args.connect_timeout)
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


# -- named background processes --

def _start(args):
    from cipher.background import process
    command = args.command
    if '--' in command:  # options may stand between NAME and --
        options, command = (command[:command.index('--')],
                            command[command.index('--') + 1:])
        args.rundir = _start_options(options, args.rundir)
    if not command:
        raise _UsageError('start needs a command: start NAME -- COMMAND...')
    pid = process.run_in_background(args.name, command, rundir=args.rundir)
    if pid is None:
        print('%s is already running' % args.name)
    else:
        print('started %s, pid %d' % (args.name, pid))
    return 0


def _start_options(options, rundir):
    """The --rundir among the ``options`` given after NAME (the only
    option of start)."""
    parser = _Parser(prog='cipher-background start', add_help=False)
    parser.add_argument('--rundir', default=rundir)
    return parser.parse_args(options).rundir


def _stop(args):
    from cipher.background import process
    before = process.status(args.name, rundir=args.rundir)
    if before.problem:
        raise BadProcessFile(before.problem)
    if not before.active:
        print('%s was not running' % args.name)
        return 0
    after = process.stop(args.name, rundir=args.rundir,
                         timeout=args.timeout, force=args.kill)
    if after.running:
        print('%s is still running, pid %d, %s s after SIGTERM%s'
              % (args.name, after.pid, args.timeout,
                 '' if args.kill else ' (--kill sends SIGKILL after '
                 '--timeout)'), file=sys.stderr)
        return 1
    if after.leftovers:
        print('%s ended, but processes it started still run: %s'
              % (args.name, ' '.join(map(str, after.leftovers))),
              file=sys.stderr)
        return 1
    print('stopped %s' % args.name)
    return 0


def _status(args):
    from cipher.background import process
    names = [args.name] if args.name else process.names(args.rundir)
    running = False
    for name in names:
        try:
            status = process.status(name, rundir=args.rundir)
        except ConfigurationError as exc:
            if args.name:
                raise
            print('%s: unknown: %s' % (name, exc))
            continue
        command = ' '.join(status.command or ())
        if status.problem:
            print('%s: unknown: %s' % (name, status.problem))
        elif status.running:
            running = True
            print('%s: running, pid %d: %s' % (name, status.pid, command))
        elif status.leftovers:
            running = True
            print('%s: ended with exit status %s, leaving %s running: %s'
                  % (name, status.returncode,
                     ' '.join(map(str, status.leftovers)), command))
        elif status.returncode is not None:
            print('%s: stopped, exit status %d: %s'
                  % (name, status.returncode, command))
        else:
            print('%s: not running' % name)
    # As init scripts do: 3 when the one process asked about is not running.
    return 0 if running or not args.name else 3


def _seconds(text):
    """An argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            'expected a number of seconds from 0 to %d, not %r'
            % (_MAX_SECONDS, text))
    return value


#: The longest wait the command takes: a year (threads cannot wait for
#: much longer, and nobody needs to).
_MAX_SECONDS = 365 * 24 * 3600


def _whole_seconds(text):
    """An argparse type: a whole number of seconds >= 1."""
    if not text.isdigit() or not 1 <= int(text) <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            'expected a whole number of seconds from 1 to %d, not %r'
            % (_MAX_SECONDS, text))
    return int(text)


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
        'names, until SIGTERM, SIGINT or SIGHUP: then the current units '
        'finish, connections and the database are closed.  Exit status 0 '
        'when every worker stopped cleanly, 1 when one crashed or outlived '
        '--grace, 2 for a usage mistake (an unknown site or user '
        'included).  MODULE is imported from the current directory too.')
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
    worker.add_argument('--grace', type=_seconds, default=STOP_GRACE_SECONDS,
                        metavar='SECONDS',
                        help='how long the current units may take to finish '
                        'at a stop (default: %(default)s)')
    worker.add_argument('--connect-timeout', type=_whole_seconds,
                        default=30, metavar='SECONDS',
                        help='how long to wait for a ZEO server, in whole '
                        'seconds (default: %(default)s)')
    worker.set_defaults(run=_worker)

    jobs = commands.add_parser(
        'jobs', help='run durable jobs in this process',
        description='Run the durable jobs of a queue in the database a URI '
        'names, until SIGTERM, SIGINT or SIGHUP: then the jobs being run '
        'finish (--grace), and a job this process could not finish is '
        'taken by another one when its lease runs out.  Exit status 0 when '
        'every thread stopped, 1 when one outlived --grace, 2 for a '
        'mistake a restart cannot fix.')
    jobs.add_argument('--zodb', required=True, metavar='URI',
                      help='file://, zeo://, memory:// or zconfig:// URI')
    jobs.add_argument('--queue', default='default', metavar='NAME',
                      help='the queue to serve (default: %(default)s)')
    jobs.add_argument('--threads', type=int, default=2, metavar='N',
                      help='jobs run at once (default: %(default)s)')
    jobs.add_argument('--poll', type=_seconds, default=1.0,
                      metavar='SECONDS',
                      help='how often an idle thread looks for work, at '
                      'first (default: %(default)s)')
    jobs.add_argument('--max-poll', type=_seconds, default=5.0,
                      metavar='SECONDS',
                      help='the longest an idle thread waits between two '
                      'looks (default: %(default)s)')
    jobs.add_argument('--grace', type=_seconds, default=STOP_GRACE_SECONDS,
                      metavar='SECONDS',
                      help='how long the jobs being run may take to finish '
                      'at a stop (default: %(default)s)')
    jobs.add_argument('--connect-timeout', type=_whole_seconds, default=30,
                      metavar='SECONDS',
                      help='how long to wait for a ZEO server, in whole '
                      'seconds (default: %(default)s)')
    jobs.set_defaults(run=_jobs)

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
        if name == 'stop':
            sub.add_argument('--timeout', type=_seconds, default=10,
                             metavar='SECONDS',
                             help='how long to wait after SIGTERM (and '
                             'after SIGKILL) (default: %(default)s)')
            sub.add_argument('--kill', action='store_true',
                             help='send SIGKILL to what still runs after '
                             '--timeout')
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
            raise _UsageError('name a command: demo, worker, jobs, start, '
                              'stop or status (see cipher-background '
                              '--help)')
        return args.run(args)
    except (_UsageError, ConfigurationError, BadProcessFile) as exc:
        # Mistakes that a restart cannot fix: 2, so that supervisors
        # (RestartPreventExitStatus=2) do not start it again and again.
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 2
    except (CommandError, BackgroundError, OSError) as exc:
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 1
