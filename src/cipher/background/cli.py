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
import os
import sys
import time

from cipher.background import _cliprocess
from cipher.background._cliopen import Parser
from cipher.background._cliopen import UsageError
from cipher.background._cliopen import open_file_storage
from cipher.background._cliwork import STOP_GRACE_SECONDS
from cipher.background._cliwork import run_jobs
from cipher.background._cliwork import run_worker
from cipher.background.errors import BackgroundError
from cipher.background.errors import BadProcessFile
from cipher.background.errors import CommandError
from cipher.background.errors import ConfigurationError


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
    db = DB(open_file_storage(args.db))
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


def run_monitor(args):
    """The monitor command (its web server is imported only for it)."""
    from cipher.background._climonitor import run_monitor
    return run_monitor(args)


def _port(text):
    """An argparse type: a TCP port number (0 for any free one)."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            'expected a port number from 0 to 65535, not %r' % (text,))
    return int(text)


def _add_database_options(command, what=None):
    """--zodb and --connect-timeout, which worker, jobs and monitor share,
    and --grace, for how long ``what`` may take at a stop."""
    command.add_argument('--zodb', required=True, metavar='URI',
                         help='file://, zeo://, memory:// or zconfig:// URI')
    if what is not None:
        command.add_argument('--grace', type=_seconds,
                             default=STOP_GRACE_SECONDS, metavar='SECONDS',
                             help='how long %s may take to finish at a stop '
                             '(default: %%(default)s)' % what)
    command.add_argument('--connect-timeout', type=_whole_seconds,
                         default=30, metavar='SECONDS',
                         help='how long to wait for a ZEO server, in whole '
                         'seconds (default: %(default)s)')


def _parser():
    parser = Parser(
        prog='cipher-background',
        description='Background work for Zope and ZODB applications.')
    commands = parser.add_subparsers(dest='command_name', metavar='COMMAND',
                                     parser_class=Parser)
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
    _add_database_options(worker, 'the current units')
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
    worker.set_defaults(run=run_worker)

    jobs = commands.add_parser(
        'jobs', help='run durable jobs in this process',
        description='Run the durable jobs of a queue in the database a URI '
        'names, until SIGTERM, SIGINT or SIGHUP: then the jobs being run '
        'finish (--grace), and a job this process could not finish is '
        'taken by another one when its lease runs out.  Exit status 0 when '
        'every thread stopped, 1 when one outlived --grace, 2 for a '
        'mistake a restart cannot fix.')
    _add_database_options(jobs, 'the jobs being run')
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
    jobs.set_defaults(run=run_jobs)

    monitor = commands.add_parser(
        'monitor', help='serve the monitor pages of a database',
        description='Serve the monitor pages (jobs, progress, results, '
        'cancel and run again) of the durable queues of the database a '
        'URI names, until SIGTERM, SIGINT or SIGHUP.  Only who shows the '
        'token printed at the start (or the first line of '
        '--password-file) sees anything.')
    _add_database_options(monitor)
    monitor.add_argument('--host', default='127.0.0.1', metavar='ADDRESS',
                         help='the address to listen on (default: '
                         '%(default)s, this machine only)')
    monitor.add_argument('--port', type=_port, default=8765, metavar='N',
                         help='the port to listen on, 0 for any free one '
                         '(default: %(default)s)')
    monitor.add_argument('--queue', action='append', metavar='NAME',
                         help='a queue to show (again for more; default: '
                         'default)')
    monitor.add_argument('--password-file', metavar='PATH',
                         help='a file whose first line is the password, '
                         'instead of a token made at each start')
    monitor.set_defaults(run=run_monitor)

    for name, run, help in [
            ('start', _cliprocess.start, 'start a named process'),
            ('stop', _cliprocess.stop, 'stop a named process'),
            ('status', _cliprocess.status, 'show named processes')]:
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
            raise UsageError('name a command: demo, worker, jobs, monitor, '
                             'start, stop or status (see cipher-background '
                             '--help)')
        return args.run(args)
    except (UsageError, ConfigurationError, BadProcessFile) as exc:
        # Mistakes that a restart cannot fix: 2, so that supervisors
        # (RestartPreventExitStatus=2) do not start it again and again.
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 2
    except (CommandError, BackgroundError, OSError) as exc:
        print('cipher-background: error: %s' % exc, file=sys.stderr)
        return 1
