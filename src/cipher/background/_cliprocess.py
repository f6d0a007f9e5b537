"""The ``start``, ``stop`` and ``status`` commands (private): named
background processes (:mod:`cipher.background.process`)."""
import sys

from cipher.background._cliopen import Parser
from cipher.background._cliopen import UsageError
from cipher.background.errors import BadProcessFile
from cipher.background.errors import ConfigurationError


def start(args):
    from cipher.background import process
    command = args.command
    if '--' in command:  # options may stand between NAME and --
        options, command = (command[:command.index('--')],
                            command[command.index('--') + 1:])
        args.rundir = _start_options(options, args.rundir)
    if not command:
        raise UsageError('start needs a command: start NAME -- COMMAND...')
    pid = process.run_in_background(args.name, command, rundir=args.rundir)
    if pid is None:
        print('%s is already running' % args.name)
    else:
        print('started %s, pid %d' % (args.name, pid))
    return 0


def _start_options(options, rundir):
    """The --rundir among the ``options`` given after NAME (the only
    option of start)."""
    parser = Parser(prog='cipher-background start', add_help=False)
    parser.add_argument('--rundir', default=rundir)
    return parser.parse_args(options).rundir


def stop(args):
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


def status(args):
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
