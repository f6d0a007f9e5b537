"""The files of a named background process (private): where they live,
who may own that place, how they are written (atomically, never through
a symbolic link) and read, and how a process is told apart from a later
one that reuses its pid."""
import errno
import json
import os
import stat
import subprocess
import tempfile

from cipher.background.errors import BadProcessFile
from cipher.background.errors import ConfigurationError


def check_rundir(path):
    """ConfigurationError unless ``path`` is a directory of the effective
    user that nobody else may write to (the pid files in it decide which
    processes get signalled)."""
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError('the run directory %s is not a directory; '
                                 'name another one' % path)
    if info.st_uid != os.geteuid():
        raise ConfigurationError(
            'the run directory %s belongs to user id %d, not to you (%d): '
            'use a directory of your own (--rundir or $%s)'
            % (path, info.st_uid, os.geteuid(), 'CIPHER_BACKGROUND_RUNDIR'))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigurationError(
            'the run directory %s may be written by other users (mode %o): '
            'run "chmod go-w %s", or use a private directory'
            % (path, stat.S_IMODE(info.st_mode), path))


def open_private(path, flags, mode=0o600):
    """``os.open`` that never follows a symbolic link at ``path``:
    ConfigurationError naming the link instead."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ConfigurationError(
            '%s is a symbolic link, which is never followed: remove it'
            % path) from None


def write_atomically(path, text):
    """Write ``text`` to ``path`` so that readers see all of it or none
    (a new file replaces whatever ``path`` was, a link included)."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name, or None when
    there is no such process (or it ended and awaits its parent)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after its closing parenthesis.
    fields = text[text.rindex(')') + 2:].split()
    return None if fields[0] in ('Z', 'X') else fields


def start_time(pid):
    """When process ``pid`` started, as the kernel tells it, or None when
    there is no such process.

    A pid is reused by later processes; (pid, start time) is not.
    """
    try:
        fields = _stat_fields(pid)
    except OSError:  # pragma: no cover (no /proc: ask ps)
        return _start_time_from_ps(pid)
    return None if fields is None else fields[19]


def _start_time_from_ps(pid):  # pragma: no cover (systems without /proc)
    done = subprocess.run(['ps', '-p', str(pid), '-o', 'lstart='],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


def is_alive(record):
    """True when the process a pid record (or its ``supervisor`` part)
    describes is still running."""
    if record is None:
        return False
    started = start_time(record['pid'])
    return started is not None and started == record['start_time']


def group_members(pgid):
    """{pid: session id} of the running processes in group ``pgid``."""
    members = {}
    try:
        entries = os.listdir('/proc')
    except FileNotFoundError:  # pragma: no cover (no /proc: ask ps)
        return _group_members_from_ps(pgid)
    for entry in entries:
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                members[int(entry)] = int(fields[3])
    return members


def _group_members_from_ps(pgid):  # pragma: no cover (no /proc)
    done = subprocess.run(['ps', '-A', '-o', 'pid=,pgid=,sess='],
                          capture_output=True, text=True)
    rows = (line.split() for line in done.stdout.splitlines())
    return {int(pid): int(session) for pid, group, session in rows
            if int(group) == pgid}


class ProcessFiles:
    """The pid, log, exit-status and lock files of ``name`` in ``rundir``
    (an absolute path)."""

    def __init__(self, rundir, name):
        self.rundir = rundir
        self.name = name
        base = os.path.join(rundir, name)
        self.pid = base + '.pid'
        self.log = base + '.log'
        self.exit = base + '.exit'
        self.lock = base + '.lock'

    def write_pid(self, record):
        write_atomically(self.pid, json.dumps(record))

    def read_pid(self):
        """The pid record, None when there is no pid file; BadProcessFile
        for one this library did not write."""
        record = _read_json(self.pid, self.name)
        if record is not None:
            _check_record(record, self.pid)
        return record

    def read_exit(self):
        """The exit record, None when there is none or it cannot be read
        (it only informs)."""
        try:
            record = _read_json(self.exit, self.name)
        except BadProcessFile:
            return None
        return record if isinstance(record, dict) else None

    def remove_pid(self, pid=None):
        """Remove the pid file (only if it names ``pid``, when given; a
        file this library did not write only when no ``pid`` is given)."""
        try:
            record = self.read_pid()
        except BadProcessFile:
            record = {'pid': None}
        if record is not None and (pid is None or record['pid'] == pid):
            try:
                os.unlink(self.pid)
            except FileNotFoundError:
                pass


def _read_json(path, name):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise BadProcessFile(
            '%s is not a file this library wrote (%s); remove it if no '
            'process %r runs' % (path, exc, name)) from None


def _is_pid(value):
    return isinstance(value, int) and not isinstance(value, bool) \
        and value > 1


def _check_record(record, path):
    """BadProcessFile unless ``record`` has the shape the supervisor
    writes: pids > 1, a start time, the supervisor, the command."""
    supervisor = record.get('supervisor') if isinstance(record, dict) \
        else None
    if not (isinstance(record, dict) and _is_pid(record.get('pid'))
            and _is_pid(record.get('pgid'))
            and isinstance(record.get('start_time'), (str, type(None)))
            and isinstance(supervisor, dict)
            and _is_pid(supervisor.get('pid'))
            and isinstance(supervisor.get('start_time'), (str, type(None)))
            and isinstance(record.get('command'), list)):
        raise BadProcessFile(
            '%s is not a pid file this library wrote (it lacks or has '
            'wrong pids, start times or command); nothing was signalled: '
            'remove it if no such process runs' % path)


def group_to_signal(record, name, path):
    """The process group of ``record`` (a checked pid record) when it is
    safe to signal now, None when the group has no member left, else
    BadProcessFile.

    The supervisor puts the command in a group of its own, inside the
    supervisor's session.  Safe means: the group is the command's (its
    id is the command's pid, never 0, 1 or the caller's group); the
    supervisor is alive with the start time the record holds and runs
    this library's supervisor for ``name`` (its command line); and every
    member of the group is in the supervisor's session, so that a group
    id reused by a stranger is never signalled.
    """
    pgid, supervisor = record['pgid'], record['supervisor']
    if pgid in (0, 1) or pgid < 0 or pgid == os.getpgrp():
        raise BadProcessFile('%s names the process group %r, which is never '
                             'signalled' % (path, pgid))
    problem = None
    if pgid != record['pid']:
        problem = 'that is not the group of its command'
    elif not is_alive(supervisor):
        problem = 'its supervisor is no longer running'
    elif not _runs_supervisor_of(supervisor['pid'], name):
        problem = 'the process is not its supervisor'
    else:
        members = group_members(pgid)
        if not members:
            return None
        if set(members.values()) != {supervisor['pid']}:
            problem = 'the group holds processes of another session'
    if problem is not None:
        raise BadProcessFile(
            '%s names the process group %d, but %s; nothing was signalled'
            % (path, pgid, problem))
    return pgid


def _runs_supervisor_of(pid, name):
    """True when ``pid``'s command line is this library's supervisor of
    ``name`` (unknowable without /proc: then True, the start time and
    group checks stand alone)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            argv = f.read().split(b'\0')
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover (no /proc)
        return True
    return (any(b'cipher.background._daemon' in arg for arg in argv)
            and name.encode() in argv)
