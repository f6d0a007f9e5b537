"""The supervisor of one named background process (private).

Started by :func:`cipher.background.process.run_in_background` as
``python -c ... RUNDIR NAME COMMAND...``.  The first process forks; the
child leaves the caller's session (no controlling terminal), starts the
command in its own process group with output to ``NAME.log``, writes
``NAME.pid`` atomically and then tells the first process, which exits so
the caller never keeps a zombie.  The supervisor outlives signals sent to
the group, waits for the command, and records its exit status in
``NAME.exit``.
"""
import json
import os
import signal
import subprocess
import sys

from cipher.background import _procfiles


def main(argv=None):
    rundir, name, *command = argv if argv is not None else sys.argv[1:]
    files = _procfiles.ProcessFiles(rundir, name)
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, 'rb') as answer:
            message = answer.read().decode('utf-8', 'replace')
        if message != 'ok':
            sys.stderr.write(message + '\n')
            os._exit(1)
        os._exit(0)
    os.close(read_end)
    os.setsid()
    _supervise(files, command, write_end)


def _detach_standard_streams(log_fd):
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)


def _supervise(files, command, ready_fd):
    log_fd = os.open(files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_fd,
            stderr=subprocess.STDOUT, close_fds=True)
    except OSError as exc:
        os.write(ready_fd, ('cannot start %r: %s' % (command, exc)).encode())
        os._exit(1)
    _detach_standard_streams(log_fd)
    os.close(log_fd)
    # Signals sent to the group reach this supervisor too: survive them,
    # so that the command's exit status is recorded.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *args: None)
    if os.path.exists(files.exit):
        os.unlink(files.exit)
    files.write_pid(dict(
        pid=process.pid, pgid=os.getpgrp(),
        start_time=_procfiles.start_time(process.pid),
        supervisor=dict(pid=os.getpid(),
                        start_time=_procfiles.start_time(os.getpid())),
        command=command))
    os.write(ready_fd, b'ok')
    os.close(ready_fd)
    returncode = process.wait()
    _procfiles.write_atomically(files.exit, json.dumps(dict(
        returncode=returncode, command=command)))
    files.remove_pid(process.pid)
    os._exit(0)


if __name__ == '__main__':  # pragma: no cover (run in a subprocess)
    main()
