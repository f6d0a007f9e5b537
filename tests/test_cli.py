"""The command line, run as a real subprocess."""
import os
import signal
import subprocess
import sys
import time

import pytest
from ZODB import DB
from ZODB.FileStorage import FileStorage

from helpers import TIMEOUT
from helpers import add_site
from helpers import read
from helpers import subprocess_env


def run(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, '-m', 'cipher.background'] + list(args),
        env=env or subprocess_env(), capture_output=True, text=True,
        cwd=cwd, timeout=TIMEOUT)


def states(path):
    db = DB(FileStorage(path, read_only=True))
    try:
        return read(db, lambda r: {
            name: doc.state for name, doc in r['site'].items()})
    finally:
        db.close()


def test_demo_shows_progress_and_history_and_runs_twice(tmp_path):
    first = run('demo', cwd=str(tmp_path))
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert 'editor started the publication job for doc-1 after the commit' \
        in out
    assert ' 50% rendering' in out
    assert '100% succeeded' in out
    assert 'doc-1 (Report 1) is PUBLISHED; history: PUBLISHED by editor' \
        in out
    assert 'editor   Add a draft' in out
    assert 'editor   job cipher.background.demo.publish_job (' in out
    second = run('demo', '--db', str(tmp_path / 'var' / 'Data.fs'))
    assert second.returncode == 0, second.stderr
    assert 'doc-2 (Report 2) is PUBLISHED' in second.stdout
    assert states(str(tmp_path / 'var' / 'Data.fs')) == {
        'doc': 'DRAFT', 'doc-1': 'PUBLISHED', 'doc-2': 'PUBLISHED'}


def test_worker_on_zeo_stops_cleanly_on_sigterm(zeo_server, zeo_db):
    add_site(zeo_db)
    worker = subprocess.Popen(
        [sys.executable, '-m', 'cipher.background', 'worker',
         '--zodb', 'zeo://127.0.0.1:%d' % zeo_server.port, '--site', '/site',
         '--worker', 'cli_workers:PairWriter', '--threads', '2',
         '--user', 'editor'],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while read(zeo_db, lambda r: r.get('a', 0)) < 5:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)  # another process works; we look now and then
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=TIMEOUT)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert 'Traceback' not in err
    assert '2 worker(s) cli_workers:PairWriter running' in err
    a, b = read(zeo_db, lambda r: (r['a'], r['b']))
    assert a == b >= 5  # every unit fully committed, or not at all


def test_worker_without_a_user_on_a_checked_site_is_refused(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = DB(FileStorage(path))
    add_site(db)
    db.close()
    done = run('worker', '--zodb', 'file://' + path, '--site', 'site',
               '--worker', 'cli_workers:ThreeUnits')
    assert done.returncode == 1
    assert 'no user is named' in done.stderr
    assert '--user' in done.stderr and 'Traceback' not in done.stderr
    db = DB(FileStorage(path, read_only=True))
    try:
        assert read(db, lambda r: r.get('a')) is None  # nothing ran
    finally:
        db.close()


def test_worker_that_ends_by_itself_exits_zero(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = DB(FileStorage(path))
    add_site(db)
    db.close()
    done = run('worker', '--zodb', 'file://' + path, '--site', 'site',
               '--worker', 'cli_workers:ThreeUnits', '--system')
    assert done.returncode == 0, done.stderr
    db = DB(FileStorage(path, read_only=True))
    try:
        assert read(db, lambda r: (r['a'], r['b'])) == (3, 3)
    finally:
        db.close()


@pytest.fixture
def file_uri(tmp_path):
    path = str(tmp_path / 'Data.fs')
    db = DB(FileStorage(path))
    add_site(db)
    db.close()
    return 'file://' + path


@pytest.mark.parametrize('args, status, message', [
    (['worker', '--zodb', 'file:///no/such/Data.fs', '--site', '/site',
      '--worker', 'cli_workers:PairWriter'], 1, 'no database file at'),
    (['worker', '--zodb', 'nonsense://x', '--site', '/site',
      '--worker', 'cli_workers:PairWriter'], 1, 'cannot use --zodb'),
    (['worker', '--zodb', '{uri}', '--site', '/site',
      '--worker', 'cli_workers:Missing'], 1, 'cannot import the worker'),
    (['worker', '--zodb', '{uri}', '--site', '/site',
      '--worker', 'no_such_module:Worker'], 1, 'cannot import the worker'),
    (['worker', '--zodb', '{uri}', '--site', '/site',
      '--worker', 'cli_workers:NotAWorker'], 1,
     'is not a BackgroundWorkerThread subclass'),
    (['worker', '--zodb', '{uri}', '--site', '/nowhere',
      '--worker', 'cli_workers:PairWriter'], 1, "no 'nowhere' in the root"),
    (['worker', '--zodb', '{uri}', '--site', '/site/doc',
      '--worker', 'cli_workers:PairWriter'], 1, 'is not a site'),
    (['worker', '--zodb', '{uri}', '--site', '/site',
      '--worker', 'nocolon'], 2, '--worker takes MODULE:CLASS'),
    (['worker', '--zodb', '{uri}', '--site', '/site',
      '--worker', 'cli_workers:PairWriter', '--threads', '0'], 2,
     '--threads must be at least 1'),
    (['worker', '--site', '/site'], 2, 'the following arguments are '
     'required: --zodb, --worker'),
    ([], 2, 'name a command'),
    (['bogus'], 2, "invalid choice: 'bogus'"),
    (['start', 'name'], 2, 'start needs a command'),
    (['start', 'bad/name', '--', 'sleep', '1'], 1,
     'not usable as a file name'),
    (['start', 'ok', '--', 'no-such-command-anywhere'], 1, 'was not found'),
])
def test_user_mistakes_are_one_line_without_traceback(
        file_uri, tmp_path, args, status, message):
    args = [a.format(uri=file_uri) for a in args]
    if args[:1] == ['start']:
        args[1:1] = ['--rundir', str(tmp_path / 'run')]
    done = run(*args)
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('cipher-background')
    assert message in lines[0]
    assert 'Traceback' not in done.stderr
    assert not os.path.exists(tmp_path / 'run')


def test_start_status_stop_a_named_process(tmp_path):
    rundir = str(tmp_path / 'run')
    started = run('start', '--rundir', rundir, 'sleeper', '--',
                  'sleep', '300')
    assert (started.returncode, started.stdout) == (0, 'started sleeper\n')
    again = run('start', '--rundir', rundir, 'sleeper', '--', 'sleep', '1')
    assert again.stdout == 'sleeper is already running\n'
    status = run('status', '--rundir', rundir, 'sleeper')
    assert status.returncode == 0
    assert status.stdout.startswith('sleeper: running, pid ')
    assert status.stdout.endswith(': sleep 300\n')
    stopped = run('stop', '--rundir', rundir, 'sleeper')
    assert stopped.stdout == 'stopped sleeper\n'
    after = run('status', '--rundir', rundir, 'sleeper')
    assert after.returncode == 3
    assert after.stdout == 'sleeper: stopped, exit status -15: sleep 300\n'
    listing = run('status', '--rundir', rundir)
    assert listing.returncode == 0 and listing.stdout.startswith('sleeper:')
    assert run('stop', '--rundir', rundir, 'sleeper').stdout == \
        'sleeper was not running\n'


def test_a_stray_pid_file_is_reported_and_the_rest_listed(tmp_path):
    rundir = tmp_path / 'run'
    rundir.mkdir(mode=0o700)
    (rundir / 'stray.pid').write_text('{"pid": 1}')
    run('start', '--rundir', str(rundir), 'sleeper', '--', 'sleep', '300')
    try:
        listing = run('status', '--rundir', str(rundir))
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        assert lines[0].startswith('sleeper: running, pid ')
        assert lines[1].startswith('stray: unknown: ')
        assert 'stray.pid is not a pid file this library wrote' in lines[1]
        refused = run('stop', '--rundir', str(rundir), 'stray')
        assert refused.returncode != 0 and 'Traceback' not in refused.stderr
        assert 'nothing was signalled' in refused.stderr
    finally:
        run('stop', '--rundir', str(rundir), 'sleeper')


@pytest.mark.parametrize('command', [[], ['demo'], ['worker'], ['start'],
                                     ['stop'], ['status']])
def test_help_everywhere(command):
    done = run(*command, '--help')
    assert done.returncode == 0
    assert done.stdout.startswith('usage: cipher-background')
