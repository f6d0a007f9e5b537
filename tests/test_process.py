"""Named background processes: really started, signalled and killed."""
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from cipher.background import process
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BadProcessFile
from cipher.background.errors import ConfigurationError
from helpers import TIMEOUT
from helpers import subprocess_env


@pytest.fixture
def rundir(tmp_path):
    path = str(tmp_path / 'run')
    yield path
    for name in process.names(path):
        try:
            process.kill(name, signal.SIGKILL, rundir=path)
        except BadProcessFile:
            pass  # a test's own planted file


def eventually(predicate):
    """Poll ``predicate`` (a process outside our control) until true."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.01)
    return True


def proc_stat(pid):
    with open('/proc/%d/stat' % pid) as f:
        return f.read().rsplit(')', 1)[1].split()


def test_start_runs_a_detached_daemon_and_refuses_a_second(rundir):
    pid = process.run_in_background('sleeper', ['sleep', '300'],
                                    rundir=rundir)
    status = process.status('sleeper', rundir=rundir)
    assert pid and status.pid == pid
    assert status.running and status.command == ('sleep', '300')
    assert process.is_running('sleeper', rundir=rundir)
    fields = proc_stat(status.pid)
    assert int(fields[3]) != os.getsid(0)  # its own session
    assert int(fields[4]) == 0  # no controlling terminal
    assert process.run_in_background('sleeper', ['sleep', '300'],
                                     rundir=rundir) is None
    assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700


def test_kill_reaches_the_whole_group_and_cleans_up(rundir, tmp_path):
    grandchild_file = tmp_path / 'grandchild'
    script = ('import subprocess, time; '
              'p = subprocess.Popen(["sleep", "300"]); '
              'open(%r, "w").write(str(p.pid)); time.sleep(300)'
              % str(grandchild_file))
    process.run_in_background('family', [sys.executable, '-c', script],
                              rundir=rundir)
    eventually(lambda: grandchild_file.exists()
               and grandchild_file.read_text())
    grandchild = int(grandchild_file.read_text())
    record = process.status('family', rundir=rundir)
    assert process.kill('family', rundir=rundir) is True
    assert not process.is_running('family', rundir=rundir)
    assert not os.path.exists(os.path.join(rundir, 'family.pid'))
    eventually(lambda: not _alive(grandchild))
    assert process.status('family', rundir=rundir).returncode == \
        -signal.SIGTERM
    assert not _alive(record.pid)
    assert process.kill('family', rundir=rundir) is False  # not running


def _alive(pid):
    try:
        return proc_stat(pid)[0] not in ('Z', 'X')
    except FileNotFoundError:
        return False


def test_output_goes_to_the_log_and_the_exit_status_is_kept(rundir):
    process.run_in_background(
        'talker', ['sh', '-c', 'echo hello from the daemon; exit 3'],
        rundir=rundir)
    eventually(lambda: process.status('talker', rundir=rundir).returncode
               is not None)
    status = process.status('talker', rundir=rundir)
    assert (status.running, status.returncode) == (False, 3)
    with open(status.log) as f:
        assert f.read() == 'hello from the daemon\n'


def test_a_reused_pid_never_reads_as_running(rundir):
    other = subprocess.Popen(['sleep', '300'])
    try:
        os.makedirs(rundir, mode=0o700)
        # A pid file whose pid now belongs to an unrelated process.
        with open(os.path.join(rundir, 'ghost.pid'), 'w') as f:
            f.write(json.dumps(dict(
                pid=other.pid, pgid=other.pid, start_time='1',
                supervisor=dict(pid=other.pid + 1, start_time='1'),
                command=['old'])))
        assert not process.is_running('ghost', rundir=rundir)
        assert process.kill('ghost', rundir=rundir) is False
        assert other.poll() is None  # the unrelated process was spared
        assert process.run_in_background('ghost', ['sleep', '300'],
                                         rundir=rundir)
        assert process.status('ghost', rundir=rundir).pid != other.pid
    finally:
        other.kill()
        other.wait()


RACER = '''
import sys
from cipher.background.process import run_in_background
print(run_in_background('racer', ['sleep', '300'], rundir=sys.argv[1]))
'''


def test_racing_callers_start_one_process(rundir):
    racers = [subprocess.Popen([sys.executable, '-c', RACER, rundir],
                               stdout=subprocess.PIPE, text=True,
                               env=subprocess_env())
              for _ in range(4)]
    answers = sorted(r.communicate(timeout=TIMEOUT)[0].strip()
                     for r in racers)
    assert answers[1:] == ['None', 'None', 'None']
    assert int(answers[0]) == process.status('racer', rundir=rundir).pid
    # And threads of one process race the same way.
    process.kill('racer', rundir=rundir)
    barrier = threading.Barrier(4)
    results = []

    def race():
        barrier.wait(TIMEOUT)
        results.append(process.run_in_background(
            'racer', ['sleep', '300'], rundir=rundir))
    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert results.count(None) == 3
    assert process.status('racer', rundir=rundir).pid in results


def test_rundir_from_the_environment_and_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv('CIPHER_BACKGROUND_RUNDIR', str(tmp_path / 'env'))
    assert process.default_rundir() == str(tmp_path / 'env')
    monkeypatch.delenv('CIPHER_BACKGROUND_RUNDIR')
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(tmp_path))
    assert process.default_rundir() == str(tmp_path / 'cipher.background')
    monkeypatch.delenv('XDG_RUNTIME_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert process.default_rundir() == str(
        tmp_path / 'home' / '.cache' / 'cipher.background')


def test_refresh_if_stale_starts_only_for_stale_data(rundir, tmp_path):
    cache = tmp_path / 'cache.json'
    command = ['sh', '-c', 'echo fresh > %s' % cache]
    assert process.refresh_if_stale('refresh', command, str(cache), 60,
                                     rundir=rundir) is True
    eventually(lambda: cache.exists() and cache.read_text() == 'fresh\n')
    eventually(lambda: not process.is_running('refresh', rundir=rundir))
    assert process.refresh_if_stale('refresh', command, str(cache), 60,
                                    rundir=rundir) is False


@pytest.mark.parametrize('name, args, message', [
    ('', ['sleep', '1'], 'not usable as a file name'),
    ('a/b', ['sleep', '1'], 'not usable as a file name'),
    ('..', ['sleep', '1'], 'not usable as a file name'),
    ('has space', ['sleep', '1'], 'not usable as a file name'),
    (None, ['sleep', '1'], 'not usable as a file name'),
    ('ok', [], 'non-empty list of strings'),
    ('ok', 'sleep 1', 'non-empty list of strings'),
    ('ok', ['sleep', 1], 'non-empty list of strings'),
    ('ok', ['no-such-command-here'], 'was not found'),
    ('ok', ['/no/such/path/cmd'], 'was not found'),
])
def test_bad_input_raises_and_leaves_no_files(rundir, name, args, message):
    with pytest.raises(ConfigurationError, match=message):
        process.run_in_background(name, args, rundir=rundir)
    assert not os.path.exists(rundir)


def write_pid_file(rundir, name, **record):
    os.makedirs(rundir, mode=0o700, exist_ok=True)
    path = os.path.join(rundir, name + '.pid')
    with open(path, 'w') as f:
        f.write(record.pop('text', None) or json.dumps(record))
    return path


def test_an_edited_pid_file_never_gets_a_stranger_signalled(rundir):
    # A process of the caller's own: a pid file edited to name it (its
    # real start time copied, so it reads as running) is refused.
    from cipher.background._procfiles import start_time
    from cipher.background.errors import BadProcessFile
    stranger = subprocess.Popen(['sleep', '300'], start_new_session=True)
    try:
        real = start_time(stranger.pid)
        mine = dict(pid=os.getpid(), start_time=start_time(os.getpid()))
        edited = dict(pid=stranger.pid, pgid=stranger.pid, start_time=real,
                      supervisor=mine, command=['sleep', '300'])
        write_pid_file(rundir, 'victim', **edited)
        assert not process.is_running('victim', rundir=rundir)
        assert 'not its supervisor' in process.status(
            'victim', rundir=rundir).problem
        with pytest.raises(BadProcessFile, match='not its supervisor'):
            process.kill('victim', rundir=rundir)
        with pytest.raises(BadProcessFile, match='not its supervisor'):
            process.run_in_background('victim', ['true'], rundir=rundir)
        # A live process at the supervisor's pid with another start time.
        write_pid_file(rundir, 'victim', **dict(edited, supervisor=dict(
            mine, start_time='bogus')))
        with pytest.raises(BadProcessFile, match='not its supervisor'):
            process.kill('victim', rundir=rundir)
        # A live command that is not in the group the file names.
        follower = subprocess.Popen(['sleep', '300'])
        try:
            write_pid_file(rundir, 'victim', **dict(
                edited, pid=follower.pid, pgid=follower.pid,
                start_time=start_time(follower.pid),
                supervisor=dict(pid=2 ** 22 + 7, start_time='1')))
            with pytest.raises(BadProcessFile, match='not in that group'):
                process.kill('victim', rundir=rundir)
        finally:
            follower.kill()
            follower.wait()
        # As its own supervisor: the supervisor's group is never signalled.
        write_pid_file(rundir, 'victim', **dict(edited, supervisor=dict(
            pid=stranger.pid, start_time=real)))
        with pytest.raises(BadProcessFile, match='group of its supervisor'):
            process.kill('victim', rundir=rundir)
        # With a supervisor gone: the group is in another session.
        write_pid_file(rundir, 'victim', **dict(edited, supervisor=dict(
            pid=2 ** 22 + 7, start_time='1')))
        with pytest.raises(BadProcessFile, match='another session'):
            process.kill('victim', rundir=rundir)
        # Our own group, and groups 0 and 1, are never signalled.
        for pgid in (os.getpgrp(), 0, 1):
            write_pid_file(rundir, 'victim', **dict(edited, pgid=pgid))
            with pytest.raises(BadProcessFile):
                process.kill('victim', rundir=rundir)
        assert stranger.poll() is None  # spared every time
    finally:
        stranger.kill()
        stranger.wait()
        os.unlink(os.path.join(rundir, 'victim.pid'))


@pytest.mark.parametrize('text', [
    'not json', '[]', 'null', '5', '{"pid": "12"}', '{"pid": 0, "pgid": 0}',
    '{"pid": 5, "pgid": 5, "start_time": "1", "command": []}',
    '{"pid": 5, "pgid": 5, "start_time": null, "command": [], '
    '"supervisor": {"pid": 6, "start_time": "1"}}',
])
def test_a_malformed_pid_file_is_reported_not_a_crash(rundir, text):
    from cipher.background.errors import BadProcessFile
    write_pid_file(rundir, 'broken', text=text)
    assert process.is_running('broken', rundir=rundir) is False
    status = process.status('broken', rundir=rundir)
    assert (status.running, status.pid) == (False, None)
    assert 'broken.pid is not' in status.problem
    with pytest.raises(BadProcessFile, match='nothing was signalled|not a'):
        process.kill('broken', rundir=rundir)
    # A start refuses it too (a process of that name might run), until it
    # is removed.
    with pytest.raises(BadProcessFile, match='remove it'):
        process.run_in_background('broken', ['sleep', '300'], rundir=rundir)
    os.unlink(os.path.join(rundir, 'broken.pid'))
    assert process.run_in_background('broken', ['sleep', '300'],
                                     rundir=rundir)
    assert process.status('broken', rundir=rundir).problem is None


# -- the run directory and its files (issue 11, items 10 and 13) --

def test_a_run_directory_others_may_write_is_refused(tmp_path):
    shared = tmp_path / 'shared'
    shared.mkdir()
    shared.chmod(0o777)
    for call in (lambda: process.run_in_background('x', ['true'],
                                                   rundir=str(shared)),
                 lambda: process.status('x', rundir=str(shared)),
                 lambda: process.names(str(shared))):
        with pytest.raises(ConfigurationError,
                           match='may be written by other users'):
            call()
    assert os.listdir(str(shared)) == []


def test_a_run_directory_of_another_user_is_refused(tmp_path):
    if os.geteuid() == 0:
        foreign = tmp_path / 'foreign'
        foreign.mkdir(mode=0o700)
        os.chown(str(foreign), 65534, 65534)
    else:
        foreign = '/'  # root's, and not writable by others
    with pytest.raises(ConfigurationError, match='belongs to user id'):
        process.run_in_background('x', ['true'], rundir=str(foreign))


def test_no_file_is_reached_through_a_symbolic_link(rundir, tmp_path):
    victim = tmp_path / 'victim'
    victim.write_text('precious\n')
    os.makedirs(rundir, mode=0o700)
    os.symlink(str(victim), os.path.join(rundir, 'planted.log'))
    with pytest.raises(ConfigurationError, match='not a regular file'):
        process.run_in_background('planted', ['echo', 'appended'],
                                  rundir=rundir)
    assert victim.read_text() == 'precious\n'
    target = tmp_path / 'created-by-lock'
    os.symlink(str(target), os.path.join(rundir, 'locked.lock'))
    with pytest.raises(ConfigurationError, match='not a regular file'):
        process.run_in_background('locked', ['true'], rundir=rundir)
    assert not target.exists()
    # The supervisor never follows a link planted after the check either.
    from cipher.background._procfiles import open_private
    with pytest.raises(ConfigurationError, match='symbolic link'):
        open_private(os.path.join(rundir, 'planted.log'), os.O_WRONLY)
    os.symlink(str(victim), os.path.join(rundir, 'linked.pid'))
    assert 'not a file this library wrote' in process.status(
        'linked', rundir=rundir).problem


@pytest.mark.parametrize('kind', ['fifo', 'folder'])
@pytest.mark.parametrize('suffix', ['.pid', '.log', '.exit', '.lock'])
def test_nothing_hangs_or_starts_over_a_fifo_or_a_folder(rundir, kind,
                                                        suffix):
    os.makedirs(rundir, mode=0o700)
    path = os.path.join(rundir, 'odd' + suffix)
    os.mkfifo(path) if kind == 'fifo' else os.mkdir(path)
    with pytest.raises(ConfigurationError, match='not a regular file'):
        process.run_in_background('odd', ['sleep', '300'], rundir=rundir)
    status = process.status('odd', rundir=rundir)  # returns, never blocks
    assert not status.active
    if suffix == '.pid':
        assert 'not a regular file' in status.problem
    assert process.names(rundir) == (['odd'] if suffix in ('.pid', '.exit')
                                     else [])


def test_a_symlinked_rundir_is_resolved_once(tmp_path):
    real = tmp_path / 'real'
    real.mkdir(mode=0o700)
    link = tmp_path / 'link'
    link.symlink_to(real)
    process.run_in_background('linked', ['sleep', '300'], rundir=str(link))
    try:
        record = json.load(open(str(real / 'linked.pid')))
        with open('/proc/%d/cmdline' % record['supervisor']['pid'],
                  'rb') as f:
            assert str(real).encode() in f.read().split(b'\0')
    finally:
        process.kill('linked', signal.SIGKILL, rundir=str(real))


def test_a_rundir_in_a_folder_others_may_change_is_refused(tmp_path):
    open_folder = tmp_path / 'open'
    open_folder.mkdir()
    open_folder.chmod(0o777)
    with pytest.raises(ConfigurationError, match='other users may change'):
        process.run_in_background('x', ['true'],
                                  rundir=str(open_folder / 'run'))
    assert not (open_folder / 'run').exists()


def test_a_relative_rundir_is_resolved_before_cwd_applies(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    process.run_in_background('here', ['sleep', '300'], rundir='run',
                              cwd=str(elsewhere))
    try:
        assert os.path.exists(str(tmp_path / 'run' / 'here.pid'))
        assert not os.path.exists(str(elsewhere / 'run'))
        assert process.run_in_background(
            'here', ['sleep', '300'], rundir='run', cwd=str(elsewhere)) \
            is None
    finally:
        process.kill('here', signal.SIGKILL, rundir='run')


@pytest.mark.parametrize('kwargs, message', [
    (dict(cwd='/no/such/folder'), 'is not a directory'),
    (dict(args=['echo', 'a\0b']), 'NUL byte'),
    (dict(env={'A=B': 'x'}), 'env must map'),
    (dict(env={'A': 1}), 'env must map'),
])
def test_a_refused_start_writes_nothing(rundir, kwargs, message):
    kwargs = dict(dict(args=['true']), **kwargs)
    with pytest.raises(ConfigurationError, match=message):
        process.run_in_background('refused', rundir=rundir, **kwargs)
    assert not os.path.exists(rundir)


# -- stopping and signals (items 11 and 12) --

TERM_IGNORER = ('import signal, sys, time; '
                'signal.signal(signal.SIGTERM, signal.SIG_IGN); '
                'signal.signal(signal.SIGHUP, lambda *a: print("hup", '
                'flush=True)); print("ready", flush=True); '
                'time.sleep(300)')


def log_text(rundir, name):
    with open(os.path.join(rundir, name + '.log')) as f:
        return f.read()


def test_stop_tells_the_truth_and_escalates_only_when_asked(rundir):
    process.run_in_background('stubborn', [sys.executable, '-c',
                                           TERM_IGNORER], rundir=rundir)
    eventually(lambda: 'ready' in log_text(rundir, 'stubborn'))
    after = process.stop('stubborn', rundir=rundir, timeout=0.2)
    assert after.running and after.active
    after = process.stop('stubborn', rundir=rundir, timeout=0.2,
                         force=True)
    assert not after.active
    assert after.returncode == -signal.SIGKILL  # recorded, even so


def test_a_signal_that_does_not_end_returns_at_once(rundir):
    process.run_in_background('reloader', [sys.executable, '-c',
                                           TERM_IGNORER], rundir=rundir)
    eventually(lambda: 'ready' in log_text(rundir, 'reloader'))
    # A timeout no test would wait for: kill returns without waiting.
    assert process.kill('reloader', signal.SIGHUP, rundir=rundir,
                        timeout=3600) is True
    eventually(lambda: 'hup' in log_text(rundir, 'reloader'))
    assert process.is_running('reloader', rundir=rundir)


@pytest.mark.parametrize('signum', [signal.SIGUSR1, signal.SIGUSR2,
                                    signal.SIGQUIT])
def test_every_catchable_signal_reaches_the_command_and_is_recorded(
        rundir, signum):
    process.run_in_background('target', ['sleep', '300'], rundir=rundir)
    record = json.load(open(os.path.join(rundir, 'target.pid')))
    supervisor = record['supervisor']['pid']
    pid_file = os.path.join(rundir, 'target.pid')
    assert process.kill('target', signum, rundir=rundir) is True
    eventually(lambda: not os.path.exists(pid_file))
    assert process.status('target', rundir=rundir).returncode == -signum
    # Sent to the supervisor alone, a signal is forwarded to the command.
    assert process.run_in_background('target', ['sleep', '300'],
                                     rundir=rundir)
    record = json.load(open(os.path.join(rundir, 'target.pid')))
    assert record['supervisor']['pid'] != supervisor
    os.kill(record['supervisor']['pid'], signum)
    eventually(lambda: process.status('target', rundir=rundir).returncode
               == -signum)


def test_sigkill_is_recorded_and_leftovers_stay_reachable(rundir, tmp_path):
    child_file = tmp_path / 'child'
    script = ('import subprocess, sys; '
              'p = subprocess.Popen(["sleep", "300"]); '
              'open(%r, "w").write(str(p.pid)); sys.exit(7)'
              % str(child_file))
    process.run_in_background('parent', [sys.executable, '-c', script],
                              rundir=rundir)
    eventually(lambda: process.status('parent', rundir=rundir).returncode
               == 7)
    left = int(child_file.read_text())
    status = process.status('parent', rundir=rundir)
    assert (status.running, status.leftovers) == (False, (left,))
    assert status.active
    assert process.run_in_background('parent', ['true'], rundir=rundir) \
        is None  # its leftovers still run under the name
    assert process.kill('parent', signal.SIGKILL, rundir=rundir) is True
    assert not _alive(left)
    status = process.status('parent', rundir=rundir)
    assert not status.active and status.returncode == 7
    assert not os.path.exists(os.path.join(rundir, 'parent.pid'))


def test_the_supervisor_sees_the_callers_packages(rundir, tmp_path):
    # As in a buildout: a bare interpreter whose script puts the packages
    # on sys.path itself.  The supervisor, started with that interpreter,
    # must see them too.
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(tmp_path / 'bare')], check=True, timeout=TIMEOUT)
    bare_python = str(tmp_path / 'bare' / 'bin' / 'python')
    packages = subprocess_env()['PYTHONPATH'].split(os.pathsep) + sys.path
    code = ('import sys; sys.path[:0] = %r; '
            'from cipher.background import process; '
            'print(process.run_in_background("isolated", ["sleep", "300"], '
            'rundir=%r))' % (packages, rundir))
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    done = subprocess.run([bare_python, '-c', code], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == process.status('isolated', rundir=rundir).pid


def test_a_command_whose_supervisor_died_is_still_known_and_reachable(
        rundir):
    pid = process.run_in_background('orphan', ['sleep', '300'],
                                    rundir=rundir)
    record = json.load(open(os.path.join(rundir, 'orphan.pid')))
    os.kill(record['supervisor']['pid'], signal.SIGKILL)
    eventually(lambda: not _alive(record['supervisor']['pid']))
    status = process.status('orphan', rundir=rundir)
    assert status.running and status.pid == pid
    assert process.run_in_background('orphan', ['sleep', '300'],
                                     rundir=rundir) is None  # no second one
    after = process.stop('orphan', rundir=rundir)
    assert not after.active and not _alive(pid)
    assert not os.path.exists(os.path.join(rundir, 'orphan.pid'))


def test_stop_ends_a_stopped_process(rundir):
    pid = process.run_in_background('frozen', ['sleep', '300'],
                                    rundir=rundir)
    os.kill(pid, signal.SIGSTOP)
    eventually(lambda: proc_stat(pid)[0] == 'T')
    after = process.stop('frozen', rundir=rundir)
    assert not after.active
    assert after.returncode == -signal.SIGTERM


def test_env_is_the_commands_and_the_supervisor_keeps_the_callers(rundir):
    env = {'PATH': os.environ['PATH'], 'GREETING': 'hello',
           'PYTHONHOME': '/no/such/python/home'}
    process.run_in_background(
        'greeter', ['sh', '-c', 'echo "$GREETING $PYTHONHOME"'],
        rundir=rundir, env=env)
    eventually(lambda: process.status('greeter', rundir=rundir).returncode
               == 0)
    assert log_text(rundir, 'greeter') == 'hello /no/such/python/home\n'


@pytest.mark.parametrize('sig', [999, -1, 'TERM', None])
def test_kill_refuses_what_is_no_signal(rundir, sig):
    with pytest.raises(ArgumentTypeError, match='sig must be a signal'):
        process.kill('any', sig, rundir=rundir)


def test_the_command_is_looked_up_in_the_path_it_will_run_with(
        rundir, tmp_path, monkeypatch):
    # env without PATH: the default path, as exec looks it up.
    assert process.run_in_background('defaulted', ['sleep', '300'],
                                     rundir=rundir, env={})
    # A program only the caller's PATH finds is not found for env={}.
    private = tmp_path / 'private-bin'
    private.mkdir()
    program = private / 'only-here'
    program.write_text('#!/bin/sh\nexit 0\n')
    program.chmod(0o755)
    monkeypatch.setenv('PATH', '%s%s%s' % (private, os.pathsep,
                                           os.environ['PATH']))
    assert process.run_in_background('found', ['only-here'], rundir=rundir)
    with pytest.raises(ConfigurationError, match='was not found'):
        process.run_in_background('elsewhere', ['only-here'],
                                  rundir=rundir, env={})
    assert not os.path.exists(os.path.join(rundir, 'elsewhere.log'))


def test_stop_resumes_a_stopped_supervisor_so_it_records_the_end(rundir):
    process.run_in_background('paused', ['sleep', '300'], rundir=rundir)
    record = json.load(open(os.path.join(rundir, 'paused.pid')))
    supervisor = record['supervisor']['pid']
    os.kill(supervisor, signal.SIGSTOP)
    eventually(lambda: proc_stat(supervisor)[0] == 'T')
    after = process.stop('paused', rundir=rundir, timeout=TIMEOUT)
    assert not after.active and after.returncode == -signal.SIGTERM
    assert not _alive(supervisor)


def test_a_supervisor_never_records_over_a_later_run(rundir):
    first = process.run_in_background('reused', ['sleep', '300'],
                                      rundir=rundir)
    record = json.load(open(os.path.join(rundir, 'reused.pid')))
    supervisor = record['supervisor']['pid']
    os.kill(supervisor, signal.SIGSTOP)  # stopped for long
    eventually(lambda: proc_stat(supervisor)[0] == 'T')
    os.kill(first, signal.SIGKILL)
    eventually(lambda: not _alive(first))
    second = process.run_in_background('reused', ['sleep', '300'],
                                       rundir=rundir)
    assert second and second != first
    os.kill(supervisor, signal.SIGCONT)  # it wakes up, late
    eventually(lambda: not _alive(supervisor))
    status = process.status('reused', rundir=rundir)
    assert status.running and status.pid == second
    assert status.returncode is None
    assert not os.path.exists(os.path.join(rundir, 'reused.exit'))
