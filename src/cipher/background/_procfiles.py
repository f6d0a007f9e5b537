"""The files of a named background process (private): where they live,
how they are written (atomically) and read, and how a process is told
apart from a later one that reuses its pid."""
import json
import os
import subprocess
import tempfile

from cipher.background.errors import BadProcessFile


def write_atomically(path, text):
    """Write ``text`` to ``path`` so that readers see all of it or none."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def start_time(pid):
    """When process ``pid`` started, as the kernel tells it, or None when
    there is no such process.

    A pid is reused by later processes; (pid, start time) is not.
    """
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:  # pragma: no cover (no /proc: ask ps)
        return _start_time_from_ps(pid)
    # The command name (field 2) may hold spaces and parentheses: split
    # after its closing parenthesis.  Field 22 is the start time.
    fields = stat[stat.rindex(')') + 2:].split()
    if fields[0] in ('Z', 'X'):  # ended, not yet reaped: not running
        return None
    return fields[19]


def _start_time_from_ps(pid):  # pragma: no cover (systems without /proc)
    done = subprocess.run(['ps', '-p', str(pid), '-o', 'lstart='],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


def is_alive(record):
    """True when the process a pid record describes is still running."""
    if record is None:
        return False
    started = start_time(record['pid'])
    return started is not None and started == record['start_time']


class ProcessFiles:
    """The pid, log, exit-status and lock files of ``name`` in ``rundir``."""

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
        with open(path) as f:
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
    """The process group of ``record`` (a checked pid record) if it is
    safe to signal now, else BadProcessFile.

    Safe means: the group's leader is the supervisor this library started
    for ``name``: the pid the record names as the supervisor, alive with
    the start time the record holds, leading the group the record names,
    and running the library's supervisor for that name (its command
    line).  Never group 0 or 1, nor the caller's own group.
    """
    pgid, supervisor = record['pgid'], record['supervisor']
    if pgid in (0, 1) or pgid < 0 or pgid == os.getpgrp():
        raise BadProcessFile('%s names the process group %r, which is never '
                             'signalled' % (path, pgid))
    problem = None
    if supervisor['pid'] != pgid:
        problem = 'its group is not led by its supervisor'
    elif not is_alive(supervisor):
        problem = 'its supervisor is no longer running'
    else:
        try:
            leads = os.getpgid(pgid) == pgid
        except ProcessLookupError:
            leads = False
        if not leads:
            problem = 'its supervisor no longer leads the group'
        elif not _runs_supervisor_of(pgid, name):
            problem = 'the process is not its supervisor'
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
