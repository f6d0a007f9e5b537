"""Named background processes: start, check, signal, by name.

A process started with :func:`run_in_background` is a daemon: its own
session, no controlling terminal, output to ``NAME.log`` beside its pid
file ``NAME.pid`` in the run directory.  A small supervisor waits for it
and records its exit status (``NAME.exit``) for :func:`status`.  A pid
file records the process's start time, so a pid reused by a later process
never reads as running.
"""
import dataclasses
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from cipher.background import _procfiles
from cipher.background.errors import BadProcessFile
from cipher.background.errors import ConfigurationError
from cipher.background.errors import ProcessStartError

#: The environment variable naming the run directory.
RUNDIR_VARIABLE = 'CIPHER_BACKGROUND_RUNDIR'

_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,99}')
_SIGNALS_THAT_END = {signal.SIGTERM, signal.SIGINT, signal.SIGKILL,
                     signal.SIGHUP, signal.SIGQUIT}


@dataclasses.dataclass(frozen=True)
class ProcessStatus:
    """What is known of a named background process."""

    name: str
    running: bool
    pid: int = None
    command: tuple = None
    returncode: int = None
    log: str = None
    #: Why the pid file could not be trusted (it was then not used).
    problem: str = None


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


def _files(name, rundir, create=False):
    _check_name(name)
    rundir = rundir or default_rundir()
    if create:
        os.makedirs(rundir, mode=0o700, exist_ok=True)
    return _procfiles.ProcessFiles(rundir, name)


def _check_command(args, cwd=None, env=None):
    if isinstance(args, str) or not isinstance(args, (list, tuple)) \
            or not args or not all(isinstance(a, str) for a in args):
        raise ConfigurationError(
            'args must be a non-empty list of strings (the command and its '
            'arguments), not %r' % (args,))
    program = args[0]
    path = (env or os.environ).get('PATH')
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
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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
        return _procfiles.is_alive(files.read_pid())
    except BadProcessFile:
        return False


def run_in_background(name, args, rundir=None, cwd=None, env=None,
                      timeout=60):
    """Start ``args`` as a detached process named ``name``.

    Returns 0 once it runs (its pid file written), or None when a process
    of that name is running already.  ``cwd`` and ``env`` are the
    command's working directory and environment.  ConfigurationError for
    a bad name or a command that does not exist; nothing is written then.
    """
    _check_name(name)
    _check_command(args, cwd, env)
    files = _files(name, rundir, create=True)
    with _Lock(files.lock):
        try:
            if _procfiles.is_alive(files.read_pid()):
                return None
        except BadProcessFile:
            pass  # not ours, so nothing of ours runs: replaced below
        files.remove_pid()  # a stale one
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        launcher = (
            'import sys; sys.path.insert(0, %r); '
            'from cipher.background._daemon import main; main()'
            % package_parent)
        done = subprocess.run(
            [sys.executable, '-c', launcher, files.rundir, name] + list(args),
            cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ProcessStartError(done.stderr.strip() or (
                'the supervisor of %r exited with %s'
                % (name, done.returncode)))
    return 0


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
    return run_in_background(name, args, rundir=rundir, **kwargs) == 0


def kill(name, sig=signal.SIGTERM, rundir=None, timeout=10):
    """Send ``sig`` to the whole process group of ``name``.

    Returns True when it was running.  Only a group led by the supervisor
    this library started for ``name`` is signalled (checked by its start
    time and command line when the signal is sent): BadProcessFile, and
    nothing signalled, for a pid file that names anything else.  For a signal that ends processes,
    waits up to ``timeout`` seconds for the end of the process and of its
    supervisor (so its exit status is recorded), and removes the pid
    file.
    """
    files = _files(name, rundir)
    record = files.read_pid()
    if not _procfiles.is_alive(record):
        return False
    pgid = _procfiles.group_to_signal(record, name, files.pid)
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    if sig in _SIGNALS_THAT_END:
        processes = [record, record.get('supervisor')]
        deadline = time.monotonic() + timeout
        while (any(map(_procfiles.is_alive, processes))
               and time.monotonic() < deadline):
            time.sleep(0.01)  # another process is ending: nothing to wait on
        if not _procfiles.is_alive(record):
            files.remove_pid(record['pid'])
    return True


def status(name, rundir=None):
    """The ProcessStatus of ``name``: running or not, its pid, command,
    the exit status of its last run, its log file."""
    files = _files(name, rundir)
    problem = None
    try:
        record = files.read_pid()
    except BadProcessFile as exc:
        record, problem = None, str(exc)
    if _procfiles.is_alive(record):
        return ProcessStatus(name, True, record['pid'],
                             tuple(record['command']), None, files.log)
    ended = files.read_exit() or {}
    returncode = ended.get('returncode')
    command = ended.get('command')
    return ProcessStatus(
        name, False, None,
        tuple(map(str, command)) if isinstance(command, list) else None,
        returncode if isinstance(returncode, int) else None,
        files.log if os.path.exists(files.log) else None, problem)


def names(rundir=None):
    """The names that have files in the run directory, sorted."""
    rundir = rundir or default_rundir()
    try:
        entries = os.listdir(rundir)
    except FileNotFoundError:
        return []
    return sorted({entry.rsplit('.', 1)[0] for entry in entries
                   if entry.endswith(('.pid', '.exit'))})
