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


def make_rundir(path):
    """Make the folder ``path`` (an absolute, resolved path) and missing
    parents, each private (0700)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    if missing:
        _check_parents(path)  # before anything is made in it
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass  # made meanwhile; checked below
        except OSError as exc:
            raise ConfigurationError('cannot make the run directory %s: %s'
                                     % (folder, exc.strerror)) from None


def check_rundir(path):
    """ConfigurationError unless ``path`` is a directory of the effective
    user that nobody else may write to, in folders that nobody else may
    rename it in (the pid files in it decide which processes get
    signalled)."""
    info = os.stat(path)
    _check_parents(os.path.dirname(path))
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


def _check_parents(folder):
    """ConfigurationError when a folder above the run directory may be
    written by another user without the sticky bit (as /tmp has)."""
    while True:
        info = os.stat(folder)
        if (info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                and not info.st_mode & stat.S_ISVTX) \
                or info.st_uid not in (0, os.geteuid()):
            raise ConfigurationError(
                'the run directory is inside %s, which other users may '
                'change (mode %o, owner %d): use a directory in a folder of '
                'yours' % (folder, stat.S_IMODE(info.st_mode), info.st_uid))
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def open_private(path, flags, mode=0o600):
    """``os.open`` of a regular file that never follows a symbolic link
    at ``path`` and never blocks on a FIFO: ConfigurationError naming
    anything else found there."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigurationError(
                '%s is a symbolic link, which is never followed: remove it'
                % path) from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise ConfigurationError(
                '%s is not a regular file: remove it' % path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigurationError('%s is not a regular file: remove it'
                                 % path)
    os.set_blocking(fd, True)
    return fd


def check_regular(*paths):
    """ConfigurationError for any of ``paths`` that exists and is not a
    regular file (a link, a folder, a FIFO...): nothing is started over
    such a file."""
    for path in paths:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(
                '%s is not a regular file (a link, a folder, a FIFO?): '
                'remove it' % path)


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


def _stat_fields(pid, ended_too=False):
    """The fields of /proc/PID/stat after the command name, or None when
    there is no such process (or, unless ``ended_too``, it ended and
    awaits its parent)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after its closing parenthesis.
    fields = text[text.rindex(')') + 2:].split()
    return None if fields[0] in ('Z', 'X') and not ended_too else fields


def start_time(pid, ended_too=False):
    """When process ``pid`` started, as the kernel tells it, or None when
    there is no such process (or, unless ``ended_too``, it has ended and
    awaits its parent).

    A pid is reused by later processes; (pid, start time) is not.
    """
    try:
        fields = _stat_fields(pid, ended_too)
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


def members(record):
    """The pids of the running processes in the command's group that are
    in its supervisor's session: the command and what it left there."""
    session = record['supervisor']['pid']
    return sorted(pid for pid, sid in group_members(record['pgid']).items()
                  if sid == session)


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
        if record is not _MISSING:
            _check_record(record, self.pid)
            return record
        return None

    def read_checked(self):
        """The pid record, checked against what runs now (see
        :func:`verify`); None when there is no pid file."""
        record = self.read_pid()
        if record is not None:
            verify(record, self.name, self.pid)
        return record

    def read_exit(self):
        """The exit record, None when there is none or it cannot be read
        (it only informs)."""
        try:
            record = _read_json(self.exit, self.name)
        except BadProcessFile:
            return None
        return record if isinstance(record, dict) else None

    def check_regular(self):
        """ConfigurationError unless each of the files is missing or a
        regular file."""
        check_regular(self.pid, self.log, self.exit, self.lock)

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


_MISSING = object()


def _read_json(path, name):
    """The JSON value in ``path``, _MISSING when there is no such file;
    BadProcessFile for anything else than a regular file of JSON."""
    try:
        fd = open_private(path, os.O_RDONLY)
        with os.fdopen(fd) as f:
            return json.load(f)
    except FileNotFoundError:
        return _MISSING
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
            and isinstance(record.get('start_time'), str)
            and isinstance(supervisor, dict)
            and _is_pid(supervisor.get('pid'))
            and isinstance(supervisor.get('start_time'), str)
            and isinstance(record.get('command'), list)
            and all(isinstance(arg, str) for arg in record['command'])):
        raise BadProcessFile(
            '%s is not a pid file this library wrote (it lacks or has '
            'wrong pids, start times or command); it was not used: '
            'remove it if no such process runs' % path)


def verify(record, name, path):
    """BadProcessFile when what runs now contradicts ``record`` (a checked
    pid record): the file was edited, or names processes that are not the
    ones the library started for ``name``.

    The supervisor puts the command in a group of its own (its id is the
    command's pid), inside the supervisor's session.  So: the group is
    never the supervisor's, 0, 1 or the caller's; a process at the
    supervisor's pid has the recorded start time and runs this library's
    supervisor for ``name`` (a session id is not reused while it lives,
    so a process there with another start time means an edited file);
    the command, while it runs, is in that group; and every member of
    the group is in the supervisor's session (which outlives the
    supervisor), so that a reused pid or group id never gets a stranger
    signalled.  Returns the members of the group.
    """
    pgid, supervisor = record['pgid'], record['supervisor']
    if pgid in (0, 1) or pgid < 0 or pgid == os.getpgrp():
        raise BadProcessFile('%s names the process group %r, which is never '
                             'signalled' % (path, pgid))
    problem = None
    found = {}
    supervisor_started = start_time(supervisor['pid'])
    if pgid != record['pid']:
        problem = 'that is not the group of its command'
    elif pgid == supervisor['pid']:
        problem = 'that is the group of its supervisor'
    elif supervisor_started is not None and (
            supervisor_started != supervisor['start_time']
            or not _runs_supervisor_of(supervisor['pid'], name)):
        problem = 'the process is not its supervisor'
    else:
        found = group_members(pgid)
        if found and set(found.values()) != {supervisor['pid']}:
            problem = 'the group holds processes of another session'
        elif is_alive(record) and record['pid'] not in found:
            problem = 'its command is not in that group'
        elif pgid in found and not is_alive(record):
            problem = 'its command has another start time'
    if problem is not None:
        raise BadProcessFile(
            '%s names the process group %d, but %s; it was not used: '
            'nothing was signalled' % (path, pgid, problem))
    return found


def group_to_signal(record, name, path):
    """The process group of ``record`` when it is safe to signal now
    (see :func:`verify`), None when the group has no member left."""
    return record['pgid'] if verify(record, name, path) else None


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
