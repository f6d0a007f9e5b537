"""The buildout deployment path as a user takes it (README.rst,
"Deployment"): a clean virtualenv (not the one the tests run in, where
everything is importable anyway), zc.buildout from the package index, the
project's buildout files, then the scripts they generate: bin/test on a
few tests, bin/cipher-background start/status/stop, and the production
example's ZEO server and worker."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from ZODB import DB
from ZEO.ClientStorage import ClientStorage

from helpers import TIMEOUT
from helpers import free_port
from helpers import read
import prebuild

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ('setup.py', 'pyproject.toml', 'README.rst', 'CHANGES.rst',
         'MANIFEST.in', 'buildout.cfg', 'buildout-zeo.cfg')
# Downloading and installing the eggs takes minutes, not seconds.
BUILD_TIMEOUT = 900

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 2 * TIMEOUT)


def clean_env():
    """The environment of a user's shell: nothing of the test run's
    packages (conftest.py gives child Pythons its sys.path)."""
    return {key: value for key, value in os.environ.items()
            if key not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}


def sh(*args, cwd, timeout=TIMEOUT, commands=None):
    """Run ``args`` in ``cwd`` with a user's environment; fail the test
    unless it exits 0."""
    returncode, stdout, stderr = (commands or prebuild.Commands()).run(
        args, cwd, clean_env(), timeout)
    assert returncode == 0, '%s\n%s\n%s' % (
        ' '.join(map(str, args)), stdout[-3000:], stderr[-3000:])
    return subprocess.CompletedProcess(args, returncode, stdout, stderr)


def build(commands, folder):
    """A copy of the project in ``folder``, built as README.rst says (the
    production file, which extends buildout.cfg, so that one run builds
    every part), with the ZEO server on a free port."""
    copy = os.path.join(folder, 'project')
    os.mkdir(copy)
    for name in FILES:
        if os.path.exists(os.path.join(PROJECT, name)):
            shutil.copy(os.path.join(PROJECT, name), copy)
    for part in ('src', 'tests'):
        shutil.copytree(os.path.join(PROJECT, part),
                        os.path.join(copy, part),
                        ignore=shutil.ignore_patterns(
                            '*.egg-info', '__pycache__'))
    sh(sys.executable, '-m', 'venv', '.', cwd=copy, commands=commands)
    sh('bin/pip', 'install', '-q', 'zc.buildout', 'setuptools<82', cwd=copy,
       timeout=BUILD_TIMEOUT, commands=commands)
    address = '127.0.0.1:%d' % free_port()
    sh('bin/buildout', '-c', 'buildout-zeo.cfg', 'zeo:address=' + address,
       cwd=copy, timeout=BUILD_TIMEOUT, commands=commands)
    return pathlib.Path(copy), address


@pytest.fixture(scope='module')
def buildout(tmp_path_factory):
    """The built copy and its ZEO address (conftest.py starts the build
    as the session begins when these tests are selected)."""
    return prebuild.result('buildout', build,
                           str(tmp_path_factory.mktemp('buildout')),
                           BUILD_TIMEOUT)


def test_bin_test_runs_the_tests(buildout):
    copy, _ = buildout
    done = sh('bin/test', '-q', '-p', 'no:cacheprovider', '-k',
              'test_the_supervisor_sees_the_callers_packages or '
              'test_start_status_stop_a_named_process or '
              'test_worker_that_ends_by_itself_exits_zero',
              cwd=copy, timeout=5 * TIMEOUT)
    assert '3 passed' in done.stdout.splitlines()[-1]


def test_bin_cipher_background_runs_named_processes(buildout, tmp_path):
    copy, _ = buildout
    rundir = str(tmp_path / 'run')
    started = sh('bin/cipher-background', 'start', '--rundir', rundir,
                 'sleeper', '--', 'sleep', '300', cwd=copy)
    assert started.stdout.startswith('started sleeper, pid ')
    status = sh('bin/cipher-background', 'status', '--rundir', rundir,
                'sleeper', cwd=copy)
    assert status.stdout.startswith('sleeper: running, pid ')
    stopped = sh('bin/cipher-background', 'stop', '--rundir', rundir,
                 'sleeper', cwd=copy)
    assert stopped.stdout == 'stopped sleeper\n'


def test_the_production_example_serves_zeo_and_runs_the_worker(buildout):
    copy, address = buildout
    sh('bin/cipher-background', 'demo', cwd=copy)  # a site and a draft
    zeo = subprocess.Popen(['bin/zeo'], cwd=str(copy), env=clean_env(),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    worker = None
    try:
        worker = subprocess.Popen(['bin/worker', '--threads', '2'],
                                  cwd=str(copy), env=clean_env(),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        host, port = address.split(':')
        db = DB(ClientStorage((host, int(port)), wait_timeout=TIMEOUT))
        try:
            deadline = time.monotonic() + TIMEOUT
            while read(db, lambda r: r['site']['doc'].state) != 'PUBLISHED':
                assert time.monotonic() < deadline and worker.poll() is None
                time.sleep(0.05)  # another process works; we look now and then
            history = read(db, lambda r: list(r['site']['doc'].history))
        finally:
            db.close()
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=TIMEOUT)
    finally:
        for process in (worker, zeo):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(TIMEOUT)
    assert worker.returncode == 0, err
    assert history == [('PUBLISHED', 'editor')]
    assert 'connecting to the ZEO server at %s' % address in err
    assert 'cipher.background.demo:DraftPublisher running' in err
