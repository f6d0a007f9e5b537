"""Slow set-ups started early: a buildout run takes two minutes of one
core, most of it pip starting once per egg, while the rest of the suite
mostly waits for subprocesses and servers.  conftest.py starts such a
set-up in a thread as soon as the session knows it will need it (and runs
the tests that use it last); the fixture collects the result, or builds
it then and there when it was not started early (a single test run).

A set-up is a function taking a :class:`Commands` (which runs its
commands so that an interrupted session can stop them) and returning
what the fixture hands on.
"""
import queue
import shutil
import subprocess
import tempfile
import threading

_started = {}  # name -> _Build


class Commands:
    """Runs a set-up's commands, one at a time; ``stop()`` ends the one
    running (and refuses the next), for a session that ends first."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None
        self._stopped = False

    def run(self, args, cwd, env, timeout):
        """(returncode, stdout, stderr) of ``args``; TimeoutExpired when
        it runs longer than ``timeout`` seconds (the process is killed)."""
        with self._lock:
            if self._stopped:
                raise RuntimeError('the test session ended first')
            self._process = subprocess.Popen(
                list(args), cwd=str(cwd), env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process = self._process
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        finally:
            with self._lock:
                self._process = None
        return process.returncode, out, err

    def stop(self):
        with self._lock:
            self._stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.kill()


class _Build:
    """One set-up: waits its turn, runs in the set-up thread."""

    def __init__(self, setup):
        self.folder = tempfile.mkdtemp(prefix='cipher-prebuild-')
        self.commands = Commands()
        self._setup = setup
        self._done = threading.Event()
        self._result = self._error = None

    def run(self):
        try:
            self._result = self._setup(self.commands, self.folder)
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def result(self, timeout):
        if not self._done.wait(timeout):
            self.commands.stop()
            raise TimeoutError('the set-up did not end in %ss' % timeout)
        if self._error is not None:
            raise self._error
        return self._result

    def discard(self):
        self._done.wait(60)
        shutil.rmtree(self.folder, ignore_errors=True)


# One set-up at a time, in the order they were started: together they
# would take the cores the rest of the suite needs.
_waiting = queue.Queue()


def _run_setups():
    while True:
        _waiting.get().run()


def start(name, setup):
    """Run ``setup(commands, folder)`` in the set-up thread, after those
    started before, in a temporary folder of its own."""
    if name not in _started:
        if not _started:
            threading.Thread(target=_run_setups, daemon=True,
                             name='prebuild').start()
        _started[name] = _Build(setup)
        _waiting.put(_started[name])


def result(name, setup, folder, timeout):
    """What ``setup`` returned: from the early start if there was one,
    else run now in ``folder``."""
    build = _started.get(name)
    if build is None:
        return setup(Commands(), folder)
    return build.result(timeout)


def discard_all():
    """Stop what still runs and remove the folders (the session ends)."""
    for build in _started.values():
        build.commands.stop()
    while _started:
        _started.popitem()[1].discard()
