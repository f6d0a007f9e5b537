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
from helpers import free_port
from helpers import read
from helpers import read_file_storage
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


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGHUP])
def test_worker_on_zeo_stops_cleanly_on_a_signal(zeo_server, zeo_db, signum):
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
        worker.send_signal(signum)
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
    assert done.returncode == 2
    assert 'no user is named' in done.stderr
    assert '--user' in done.stderr and 'Traceback' not in done.stderr
    db = DB(FileStorage(path, read_only=True))
    try:
        assert read(db, lambda r: r.get('a')) is None  # nothing ran
    finally:
        db.close()


def test_worker_that_ends_by_itself_exits_zero(site_file):
    path = site_file
    done = run('worker', '--zodb', 'file://' + path, '--site', 'site',
               '--worker', 'cli_workers:ThreeUnits', '--system')
    assert done.returncode == 0, done.stderr
    assert read_file_storage(path, lambda r: (r['a'], r['b'])) == (3, 3)


def start_worker(path, *args, env=None):
    return subprocess.Popen(
        [sys.executable, '-m', 'cipher.background', 'worker',
         '--zodb', 'file://' + path, '--site', '/site', '--system'] +
        list(args), env=env or subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def test_a_crashed_worker_makes_the_command_fail(site_file):
    path = site_file
    done = run('worker', '--zodb', 'file://' + path, '--site', 'site',
               '--worker', 'cli_workers:Crasher', '--system')
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('cipher-background: error: ')
    assert 'crashed: RuntimeError: the schedule is broken' in last


def test_a_worker_outliving_the_grace_time_makes_the_command_fail(
        tmp_path, site_file):
    path = site_file
    marker, release = tmp_path / 'in-unit', tmp_path / 'release'
    env = dict(subprocess_env(), CIPHER_TEST_MARKER=str(marker),
               CIPHER_TEST_RELEASE=str(release))
    worker = start_worker(path, '--worker', 'cli_workers:Stuck',
                          '--grace', '0.1', env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.01)  # another process works; we look now and then
        worker.send_signal(signal.SIGTERM)
        lines = []
        while 'did not stop' not in ''.join(lines):
            lines.append(worker.stderr.readline())
            assert lines[-1], 'the command ended without saying so'
        release.touch()  # the unit may end now; the process exits
        out, err = worker.communicate(timeout=TIMEOUT)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 1
    assert 'Stuck' in lines[-1] and 'within 0.1 s' in lines[-1]
    assert 'database was left open' in lines[-1]
    assert 'Traceback' not in err


def test_a_worker_module_in_the_current_directory_is_found(tmp_path,
                                                          site_file):
    (tmp_path / 'localworkers.py').write_text(
        'from cli_workers import ThreeUnits as Here\n')
    path = site_file
    # -P: as from the console script, the working directory is not on
    # sys.path by itself (python -m would put it there).
    done = subprocess.run(
        [sys.executable, '-P', '-m', 'cipher.background', 'worker',
         '--zodb', 'file://' + path, '--site', 'site',
         '--worker', 'localworkers:Here', '--system'],
        env=subprocess_env(), capture_output=True, text=True,
        cwd=str(tmp_path), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert read_file_storage(path, lambda r: (r['a'], r['b'])) == (3, 3)


def test_a_zeo_server_that_is_down_is_waited_for_as_long_as_told():
    done = run('worker', '--zodb', 'zeo://127.0.0.1:%d' % free_port(),
               '--site', '/site', '--worker', 'cli_workers:PairWriter',
               '--system', '--connect-timeout', '1')
    assert done.returncode == 1
    waiting, error = done.stderr.strip().splitlines()
    assert 'connecting to the ZEO server at 127.0.0.1:' in waiting
    assert 'waiting up to 1 s' in waiting
    assert 'no ZEO server answered at 127.0.0.1:' in error
    assert 'within 1 s' in error


@pytest.fixture
def site_file(tmp_path):
    """The path of a closed FileStorage with a demo site."""
    path = str(tmp_path / 'Data.fs')
    db = DB(FileStorage(path))
    add_site(db)
    db.close()
    return path


@pytest.fixture
def file_uri(site_file):
    return 'file://' + site_file


WORKER = ['worker', '--zodb', '{uri}', '--site', '/site']


@pytest.mark.parametrize('args, status, message', [
    # worker: mistakes a restart cannot fix are 2; the rest 1.
    (['worker', '--zodb', 'file:///no/such/Data.fs', '--site', '/site',
      '--worker', 'cli_workers:PairWriter'], 2, 'no database file at'),
    (['worker', '--zodb', 'nonsense://x', '--site', '/site',
      '--worker', 'cli_workers:PairWriter'], 2, 'cannot use --zodb'),
    (WORKER + ['--worker', 'cli_workers:Missing'], 2,
     'cannot import the worker'),
    (WORKER + ['--worker', 'no_such_module:Worker'], 2,
     'cannot import the worker'),
    (WORKER + ['--worker', 'cli_workers:NotAWorker'], 2,
     'is not a BackgroundWorkerThread subclass'),
    (WORKER + ['--worker', 'broken_workers:W'], 2,
     'cannot import the worker broken_workers:W: SyntaxError'),
    (WORKER + ['--worker', 'exiting_workers:W'], 2,
     'cannot import the worker exiting_workers:W: SystemExit'),
    (WORKER + ['--worker', 'cli_workers:BadInit', '--user', 'editor'], 2,
     'cannot make the worker cli_workers:BadInit: RuntimeError'),
    (['worker', '--zodb', '{uri}', '--site', '/nowhere',
      '--worker', 'cli_workers:PairWriter'], 2, "no 'nowhere' in the root"),
    (['worker', '--zodb', '{uri}', '--site', '/site/doc',
      '--worker', 'cli_workers:PairWriter'], 2, 'is not a site'),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--user', 'nobody'], 2,
     "'nobody'"),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--user', ''], 2,
     'principal id'),
    (['worker', '--zodb', '{locked}', '--site', '/site',
      '--worker', 'cli_workers:PairWriter', '--user', 'editor'], 1,
     'cannot open the database'),
    (['worker', '--zodb', '{not_a_db}', '--site', '/site',
      '--worker', 'cli_workers:PairWriter', '--user', 'editor'], 2,
     'is not a FileStorage file'),
    (WORKER + ['--worker', 'nocolon'], 2, '--worker takes MODULE:CLASS'),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--threads', '0'], 2,
     '--threads must be at least 1'),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--threads', 'many'],
     2, "invalid int value: 'many'"),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--grace', '-1'], 2,
     'expected a number of seconds from 0 to'),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--grace', 'nan'], 2,
     'expected a number of seconds from 0 to'),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--connect-timeout',
               'inf'], 2, 'expected a whole number of seconds from 1'),
    (['worker', '--site', '/site'], 2, 'the following arguments are '
     'required: --zodb, --worker'),
    # jobs
    (['jobs', '--zodb', 'nonsense://x'], 2, 'cannot use --zodb'),
    (['jobs', '--zodb', '{uri}', '--threads', '0'], 2,
     '--threads must be at least 1'),
    (['jobs', '--zodb', '{uri}', '--poll', '0'], 2,
     '--poll must be more than 0 seconds'),
    (['jobs', '--zodb', '{locked}'], 1, 'cannot open the database'),
    (['jobs'], 2, 'the following arguments are required: --zodb'),
    # demo
    (['demo', '--db', '{db}', '--user', 'nobody'], 1,
     "no user 'nobody' in the demo site"),
    (['demo', '--db', '{not_a_db_path}'], 2, 'is not a FileStorage file'),
    (['demo', '--db', '{fake_fs_path}'], 2,
     'cannot open {fake_fs_path} as a FileStorage'),
    (WORKER[:2] + ['file://{fake_fs_path}'] + WORKER[3:] + [
        '--worker', 'cli_workers:PairWriter'], 2, 'cannot open the database'),
    (WORKER + ['--worker', 'cli_workers:PairWriter', '--grace', '1e10'], 2,
     'expected a number of seconds from 0 to'),
    (WORKER + ['--worker', 'cli_workers:ExitingInit', '--user', 'editor'], 2,
     'cannot make the worker cli_workers:ExitingInit: SystemExit'),
    (['demo', '--db', '/dev/null'], 2, 'is not a regular file'),
    (['demo', '--db', ''], 2, '--db needs a file name'),
    (['demo', '--db', '{locked_path}'], 1, 'is in use by another process'),
    (['demo', '--db', '/proc/no/such/place/Data.fs'], 1, 'cannot'),
    # the command itself
    ([], 2, 'name a command'),
    (['bogus'], 2, "invalid choice: 'bogus'"),
    # named processes
    (['start', 'name'], 2, 'start needs a command'),
    (['start', 'bad/name', '--', 'sleep', '1'], 2,
     'not usable as a file name'),
    (['start', 'ok', '--', 'no-such-command-anywhere'], 2, 'was not found'),
    (['start', '--rundir', '{shared}', 'ok', '--', 'true'], 2,
     'may be written by other users'),
    (['start', 'ok', '--rundir', '{shared}', '--', 'true'], 2,
     'may be written by other users'),
    (['start', 'ok', '--bogus', '--', 'true'], 2,
     'unrecognized arguments: --bogus'),
    (['start', 'odd', '--', 'true'], 2, 'is not a regular file'),
    (['stop', 'bad/name'], 2, 'not usable as a file name'),
    (['stop', 'ok', '--timeout', 'soon'], 2,
     "not 'soon'"),
    (['stop', 'ok', '--timeout', '-1'], 2, 'expected a number of seconds'),
    (['stop', 'ok', '--rundir', '{shared}'], 2,
     'may be written by other users'),
    (['stop', 'stray'], 2, 'it was not used'),
    (['status', 'bad/name'], 2, 'not usable as a file name'),
    (['status', '--rundir', '{shared}'], 2, 'may be written by other users'),
    (['status', 'a', 'b'], 2, 'unrecognized arguments: b'),
])
def test_user_mistakes_are_one_line_without_traceback(
        file_uri, tmp_path, args, status, message):
    shared = tmp_path / 'shared'
    shared.mkdir()
    shared.chmod(0o777)
    not_a_db = tmp_path / 'notes.txt'
    not_a_db.write_text('not a database\n')
    fake_fs = tmp_path / 'fake.fs'
    fake_fs.write_bytes(b'FS21garbagegarbage')
    locked_path = str(tmp_path / 'locked.fs')
    files = dict(uri=file_uri, db=file_uri[len('file://'):],
                 shared=str(shared), not_a_db_path=str(not_a_db),
                 not_a_db='file://%s' % not_a_db, locked_path=locked_path,
                 fake_fs_path=str(fake_fs),
                 locked='file://' + locked_path)
    args = [a.format(**files) for a in args]
    if args[:1] in (['start'], ['stop'], ['status']) \
            and '--rundir' not in args:
        args[1:1] = ['--rundir', str(tmp_path / 'run')]
        (tmp_path / 'run').mkdir(mode=0o700)
        os.mkfifo(str(tmp_path / 'run' / 'odd.log'))
        (tmp_path / 'run' / 'stray.pid').write_text('{"pid": 1}')
    (tmp_path / 'broken_workers.py').write_text('def (:\n')
    (tmp_path / 'exiting_workers.py').write_text(
        'import sys\nsys.exit(0)\n')
    holder = FileStorage(locked_path)  # locked while the command runs
    try:
        done = run(*args, cwd=str(tmp_path))
    finally:
        holder.close()
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('cipher-background')
    assert message.format(**files) in lines[0]
    assert 'Traceback' not in done.stderr
    # Nothing half-written: no files of a start, no files of a storage
    # beside what is not one.
    if os.path.exists(str(tmp_path / 'run')):
        assert sorted(os.listdir(str(tmp_path / 'run'))) == [
            'odd.log', 'stray.pid']
    assert not [name for name in os.listdir(str(tmp_path))
                if name.startswith(('notes.txt.', 'fake.fs.'))]


def test_start_status_stop_a_named_process(tmp_path):
    rundir = str(tmp_path / 'run')
    started = run('start', '--rundir', rundir, 'sleeper', '--',
                  'sleep', '300')
    assert started.returncode == 0
    assert started.stdout.startswith('started sleeper, pid ')
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
        assert 'it was not used' in refused.stderr
    finally:
        run('stop', '--rundir', str(rundir), 'sleeper')


@pytest.mark.parametrize('command', [[], ['demo'], ['worker'], ['jobs'],
                                     ['start'], ['stop'], ['status']])
def test_help_everywhere(command):
    done = run(*command, '--help')
    assert done.returncode == 0
    assert done.stdout.startswith('usage: cipher-background')


def readme_commands():
    """The worker commands of README.rst's systemd unit and supervisord
    program, as argument lists."""
    with open(os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), 'README.rst')) as f:
        lines = f.read().splitlines()
    commands = []
    for number, line in enumerate(lines):
        for key in ('ExecStart=', 'command='):
            if line.strip().startswith(key):
                text = line.strip()[len(key):]
                following = iter(lines[number + 1:])
                for more in following:  # continuations
                    if text.endswith('\\'):
                        text = text[:-1] + ' ' + more.strip()
                    elif more.startswith('        '):  # supervisord's
                        text += ' ' + more.strip()
                    else:
                        break
                commands.append(text.split())
    return commands


def test_the_readme_service_examples_use_real_options():
    from cipher.background.cli import _parser
    commands = readme_commands()
    assert len(commands) == 2
    for command in commands:
        assert command[0].endswith('bin/cipher-background')
        args = _parser().parse_args(command[1:])
        assert (args.command_name, args.site, args.user, args.threads) == \
            ('worker', '/site', 'indexer', 2)
