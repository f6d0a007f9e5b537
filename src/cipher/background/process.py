"""Named background processes: start, check, signal, by name.

A process started with :func:`run_in_background` is a daemon: its own
session, no controlling terminal, output to ``NAME.log`` beside its pid
file ``NAME.pid`` in the run directory.  A small supervisor waits for it
and records its exit status (``NAME.exit``) for :func:`status`, however
it ended.  A pid file records the process's start time, so a pid reused
by a later process never reads as running.

The run directory holds what decides which processes get signalled: it
must belong to the user and be writable by nobody else, and no file in
it is ever reached through a symbolic link.
"""
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from cipher.background import _procfiles
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BadProcessFile
from cipher.background.errors import ConfigurationError
from cipher.background.errors import ProcessStartError

#: The environment variable naming the run directory.
RUNDIR_VARIABLE = 'CIPHER_BACKGROUND_RUNDIR'

_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,99}')
#: The signals after which :func:`kill` waits for the end of the process.
_SIGNALS_THAT_END = {signal.SIGTERM, signal.SIGINT, signal.SIGKILL,
                     signal.SIGQUIT}


@dataclasses.dataclass(frozen=True)
class ProcessStatus:
    """What is known of a named background process."""

    name: str
    running: bool
    pid: int = None
    command: tuple = None
    #: The exit status of the last run: negative for the signal that
    #: ended it (-9 for SIGKILL); None while running or when unknown.
    returncode: int = None
    log: str = None
    #: Why the pid file could not be trusted (it was then not used).
    problem: str = None
    #: Pids of processes the command left in its group after it ended;
    #: :func:`kill` and :func:`stop` still reach them.
    leftovers: tuple = ()

    @property
    def active(self):
        """True while the command or anything it left in its group runs."""
        return self.running or bool(self.leftovers)


def default_rundir():
    """The run directory: $CIPHER_BACKGROUND_RUNDIR, else a per-user one
    ($XDG_RUNTIME_DIR/cipher.background or ~/.cache/cipher.background)."""
    configured = os.environ.get(RUNDIR_VARIABLE)
    if configured:
        return configured
    runtime = os.environ.get('XDG_RUNTIME_DIR')
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, 'cipher.background')
    return os.path.join(os.path.expanduser('~'), '.cache',
                        'cipher.background')


def _check_name(name):
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            'process name %r is not usable as a file name: use 1-100 '
            'letters, digits, dots, dashes or underscores, starting with a '
            'letter or digit' % (name,))


def _rundir(rundir, create=False):
    """The run directory, resolved once to an absolute path without
    symbolic links (so that neither a ``cwd=`` nor a link changed later
    moves the files); checked when it exists, made private when
    ``create``."""
    if rundir is not None and not isinstance(rundir, (str, os.PathLike)) \
            or '\0' in os.fspath(rundir or ''):
        raise ConfigurationError('rundir must be a path, not %r' % (rundir,))
    rundir = os.path.realpath(os.path.abspath(rundir or default_rundir()))
    if create:
        _procfiles.make_rundir(rundir)
    if os.path.lexists(rundir):
        _procfiles.check_rundir(rundir)
    return rundir


def _files(name, rundir, create=False):
    """The files of ``name`` in the run directory (see :func:`_rundir`)."""
    _check_name(name)
    return _procfiles.ProcessFiles(_rundir(rundir, create), name)


def _check_command(args, cwd=None, env=None):
    if isinstance(args, str) or not isinstance(args, (list, tuple)) \
            or not args or not all(isinstance(a, str) for a in args):
        raise ConfigurationError(
            'args must be a non-empty list of strings (the command and its '
            'arguments), not %r' % (args,))
    if any('\0' in arg for arg in args):
        raise ConfigurationError(
            'an argument holds a NUL byte, which no command can receive: '
            '%r' % (args,))
    if env is not None and not all(
            isinstance(key, str) and isinstance(value, str)
            and key and '=' not in key and '\0' not in key + value
            for key, value in env.items()):
        raise ConfigurationError(
            'env must map variable names (no "=", no NUL) to strings')
    if cwd is not None and not (isinstance(cwd, (str, os.PathLike))
                                and os.path.isdir(cwd)):
        raise ConfigurationError('cwd %r is not a directory' % (cwd,))
    program = args[0]
    # The PATH the command will be looked up in (the default one when
    # env has none), as the supervisor's exec looks it up.
    path = os.pathsep.join(os.get_exec_path(env))
    if os.sep in program:
        candidate = os.path.join(cwd or '', program)
        found = os.access(candidate, os.X_OK) and not os.path.isdir(
            candidate)
    else:
        found = shutil.which(program, path=path) is not None
    if not found:
        raise ConfigurationError(
            'command %r was not found or is not executable; give its full '
            'path, or check PATH' % program)


class _Lock:
    """An exclusive lock on the name's lock file, held while checking and
    starting, so that racing callers start one process, not two."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = _procfiles.open_private(self.path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def is_running(name, rundir=None):
    """True when the process started under ``name`` is running (False
    when its pid file is not one this library wrote)."""
    files = _files(name, rundir)
    try:
        return _procfiles.is_alive(files.read_checked())
    except BadProcessFile:
        return False


def _supervisor_launcher():
    """The Python code that runs the supervisor with the caller's
    ``sys.path``: in a buildout (or any script that sets its own path),
    ``sys.executable`` alone sees none of the caller's packages."""
    path = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    return ('import sys; sys.path[:0] = %r; '
            'from cipher.background._daemon import main; main()' % path)


def _active(record):
    """True while the command of ``record`` or anything it left in its
    group runs (its supervisor may have died meanwhile)."""
    return record is not None and (_procfiles.is_alive(record)
                                   or bool(_procfiles.members(record)))


def run_in_background(name, args, rundir=None, cwd=None, env=None,
                      timeout=60):
    """Start ``args`` as a detached process named ``name``.

    Returns the pid of the started command (a true value) once it runs
    and its pid file is written, or None when a process of that name is
    running already (or its leftovers are: stop them first).  ``cwd`` and
    ``env`` are the command's working directory and environment (the
    supervisor keeps the caller's).  ConfigurationError for a bad name,
    command, ``cwd``, ``env`` or run directory, and nothing is written
    then; BadProcessFile when the pid file is not one this library wrote
    (a process of that name might run: remove the file if none does);
    ProcessStartError when the command could not be started.
    """
    _check_name(name)
    _check_command(args, cwd, env)
    files = _files(name, rundir, create=True)
    files.check_regular()
    with _Lock(files.lock):
        record = files.read_checked()
        if _active(record):
            return None
        files.remove_pid()  # a stale one
        command = [sys.executable, '-c', _supervisor_launcher(),
                   files.rundir, name] + list(args)
        try:
            done = subprocess.run(
                command, cwd=cwd, input=json.dumps(env), capture_output=True,
                text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            # Its supervisor may have started it all the same.
            record = files.read_pid()
            if _active(record):
                return record['pid']
            raise ProcessStartError(
                'the supervisor of %r did not answer within %ss; see %s'
                % (name, timeout, files.log)) from None
        except OSError as exc:
            raise ProcessStartError('cannot start %r: %s' % (
                name, exc.strerror or exc)) from None
        if done.returncode != 0:
            raise ProcessStartError(done.stderr.strip() or (
                'the supervisor of %r exited with %s'
                % (name, done.returncode)))
        return int(done.stdout)


def refresh_if_stale(name, args, path, max_age, rundir=None, **kwargs):
    """Start ``args`` under ``name`` when the file at ``path`` is missing or
    older than ``max_age`` seconds (and it is not running yet).

    The pattern "serve the cached data, refresh it in the background":
    returns True when a refresh was started.
    """
    try:
        age = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        age = None
    if age is not None and age <= max_age:
        return False
    return run_in_background(name, args, rundir=rundir, **kwargs) is not None


def kill(name, sig=signal.SIGTERM, rundir=None, timeout=10):
    """Send ``sig`` to the process group of ``name``: the command and
    whatever it started (or left behind after it ended).

    Returns True when there was a process to signal.  Only the group the
    library's supervisor made for ``name`` is signalled (checked when the
    signal is sent: the supervisor's command line, the session of every
    member, the command's start time): BadProcessFile, and nothing
    signalled, for a pid file that names anything else.  After a signal
    that ends processes (SIGTERM, SIGINT, SIGQUIT, SIGKILL) the group
    also gets SIGCONT (a stopped process could not end otherwise), and
    kill waits up to ``timeout`` seconds for the group to empty and the
    exit status to be recorded; after any other signal it returns at
    once.
    """
    sig = _check_signal(sig)
    files = _files(name, rundir)
    record = files.read_pid()
    if record is None:
        return False
    pgid = _procfiles.group_to_signal(record, name, files.pid)
    if pgid is None:
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False  # the group ended meanwhile
    if sig in _SIGNALS_THAT_END:
        _resume(pgid, record['supervisor'])
    if sig in _SIGNALS_THAT_END:
        supervisor = record['supervisor']
        deadline = time.monotonic() + timeout
        while ((_active(record) or _procfiles.is_alive(supervisor))
               and time.monotonic() < deadline):
            time.sleep(0.01)  # another process is ending: nothing to wait on
        if not (_active(record) or _procfiles.is_alive(supervisor)):
            files.remove_pid(record['pid'])  # its supervisor had died
    return True


def _resume(pgid, supervisor):
    """SIGCONT to the group and to its supervisor (checked by
    :func:`kill`): a stopped process could not end, nor a stopped
    supervisor record how it ended."""
    try:
        os.killpg(pgid, signal.SIGCONT)
    except ProcessLookupError:
        pass  # it ended at once
    if _procfiles.is_alive(supervisor):
        try:
            os.kill(supervisor['pid'], signal.SIGCONT)
        except ProcessLookupError:
            pass


def _check_signal(sig):
    try:
        return signal.Signals(sig)
    except (ValueError, TypeError):
        raise ArgumentTypeError('sig must be a signal number such as '
                                'signal.SIGTERM, not %r' % (sig,)) from None


def stop(name, rundir=None, timeout=10, force=False):
    """Stop ``name``: SIGTERM to its group, then up to ``timeout`` seconds
    for it to end; with ``force``, SIGKILL to what is left, and as long
    again.  Returns the ProcessStatus afterwards: check ``active`` (False
    when everything ended)."""
    kill(name, signal.SIGTERM, rundir=rundir, timeout=timeout)
    if force and status(name, rundir=rundir).active:
        kill(name, signal.SIGKILL, rundir=rundir, timeout=timeout)
    return status(name, rundir=rundir)


def status(name, rundir=None):
    """The ProcessStatus of ``name``: running or not, its pid, command,
    the exit status of its last run, its log file, its leftovers."""
    files = _files(name, rundir)
    problem = None
    try:
        record = files.read_checked()
    except BadProcessFile as exc:
        record, problem = None, str(exc)
    if _procfiles.is_alive(record):
        return ProcessStatus(name, True, record['pid'],
                             tuple(record['command']), None, files.log)
    leftovers = () if record is None else tuple(_procfiles.members(record))
    ended = files.read_exit() or {}
    returncode = ended.get('returncode')
    command = ended.get('command')
    return ProcessStatus(
        name, False, None,
        tuple(map(str, command)) if isinstance(command, list) else None,
        returncode if isinstance(returncode, int)
        and not isinstance(returncode, bool) else None,
        files.log if os.path.exists(files.log) else None, problem,
        leftovers)


def names(rundir=None):
    """The names that have files in the run directory, sorted (files
    whose names no process could have are left out)."""
    rundir = _rundir(rundir)
    if not os.path.lexists(rundir):
        return []
    found = {entry.rsplit('.', 1)[0] for entry in os.listdir(rundir)
             if entry.endswith(('.pid', '.exit'))}
    return sorted(name for name in found if _NAME.fullmatch(name))
