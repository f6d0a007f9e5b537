"""The files of a named background process (private): where they live,
how they are written (atomically) and read, and how a process is told
apart from a later one that reuses its pid."""
import json
import os
import subprocess
import tempfile


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
        return _read_json(self.pid)

    def read_exit(self):
        return _read_json(self.exit)

    def remove_pid(self, pid=None):
        """Remove the pid file (only if it names ``pid``, when given)."""
        record = self.read_pid()
        if record is not None and (pid is None or record['pid'] == pid):
            try:
                os.unlink(self.pid)
            except FileNotFoundError:
                pass


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None
