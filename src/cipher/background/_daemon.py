"""The supervisor of one named background process (private).

Started by :func:`cipher.background.process.run_in_background` as
``python -c ... RUNDIR NAME COMMAND...``.  The first process forks; the
child leaves the caller's session (no controlling terminal) and becomes
the supervisor: it starts the command in a process group of its own,
with output to ``NAME.log``, writes ``NAME.pid`` atomically and then
tells the first process the command's pid; that one prints it and exits,
so the caller never keeps a zombie.

The supervisor is outside the command's group, so nothing sent to the
group (SIGKILL included) reaches it; a catchable signal sent to the
supervisor itself is forwarded to the group.  It waits for the command,
records its exit status in ``NAME.exit``, and stays while processes the
command left in its group run on, so that they can still be signalled
by name; then it removes the pid file.
"""
import json
import os
import signal
import subprocess
import sys
import time

from cipher.background import _procfiles
from cipher.background.errors import BadProcessFile


def main(argv=None):
    rundir, name, *command = argv if argv is not None else sys.argv[1:]
    env = json.load(sys.stdin)  # the command's environment, or None
    files = _procfiles.ProcessFiles(rundir, name)
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, 'rb') as answer:
            message = answer.read().decode('utf-8', 'replace')
        if not message.startswith('ok '):
            sys.stderr.write(message + '\n')
            os._exit(1)
        sys.stdout.write(message[3:])  # the command's pid
        sys.stdout.flush()
        os._exit(0)
    os.close(read_end)
    os.setsid()
    _supervise(files, command, env, write_end)


def _detach_standard_streams(log_fd):
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)


def _supervise(files, command, env, ready_fd):
    forward = _Forwarder()  # from now on: signals are kept, then forwarded
    try:
        _procfiles.check_regular(files.exit)
        if os.path.exists(files.exit):
            os.unlink(files.exit)  # the last run's
        log_fd = _procfiles.open_private(
            files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_fd,
            stderr=subprocess.STDOUT, close_fds=True, env=env, **_OWN_GROUP)
    except (OSError, ValueError) as exc:  # ConfigurationError is one
        os.write(ready_fd, ('cannot start %r: %s' % (command, exc)).encode())
        os._exit(1)
    _detach_standard_streams(log_fd)
    os.close(log_fd)
    forward.to(process.pid)
    try:
        files.write_pid(dict(
            pid=process.pid, pgid=process.pid,
            # Even when the command ended already: the record is whole.
            start_time=_procfiles.start_time(process.pid, ended_too=True),
            supervisor=dict(pid=os.getpid(),
                            start_time=_procfiles.start_time(os.getpid())),
            command=command))
    except OSError as exc:  # no pid file: nothing may run unreachable
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.write(ready_fd, ('cannot write %s: %s' % (files.pid, exc))
                 .encode())
        os._exit(1)
    os.write(ready_fd, b'ok %d' % process.pid)
    os.close(ready_fd)
    returncode = process.wait()
    if _still_ours(files, process.pid):  # not a later run's name by now
        _procfiles.write_atomically(files.exit, json.dumps(dict(
            returncode=returncode, command=command)))
    while _procfiles.group_members(process.pid):
        time.sleep(0.5)  # leftovers are not our children: nothing to wait on
    files.remove_pid(process.pid)
    os._exit(0)


def _still_ours(files, pid):
    """True while the pid file names this supervisor's command (a
    supervisor stopped for long may find a later run under the name)."""
    try:
        record = files.read_pid()
    except BadProcessFile:
        return False
    return record is not None and record['pid'] == pid


# The command leads a process group of its own (set in the child, before
# it runs the command).
_OWN_GROUP = (dict(process_group=0) if sys.version_info >= (3, 11)
              else dict(preexec_fn=os.setpgrp))

# Signals that the supervisor's own work raises, never an operator's.
_NOT_FORWARDED = {signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ,
                  signal.SIGKILL, signal.SIGSTOP}


class _Forwarder:
    """Catches every catchable signal sent to the supervisor: kept until
    the command's group exists, then forwarded to it.  (The handlers are
    reset to the default in the command when it starts.)"""

    def __init__(self):
        self.pgid = None
        self.pending = []
        for signum in signal.valid_signals() - _NOT_FORWARDED:
            try:
                signal.signal(signum, self._caught)
            except (OSError, ValueError):
                pass  # reserved by the C library

    def _caught(self, signum, frame):
        if self.pgid is None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum):
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass  # the group is empty: the command is ending anyway

    def to(self, pgid):
        self.pgid = pgid
        while self.pending:
            self._send(self.pending.pop(0))


if __name__ == '__main__':  # pragma: no cover (run in a subprocess)
    main()
