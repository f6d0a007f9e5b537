"""The command line, run as a real subprocess."""
import subprocess
import sys

from ZODB import DB
from ZODB.FileStorage import FileStorage

from helpers import TIMEOUT
from helpers import read
from helpers import subprocess_env


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, '-m', 'cipher.background'] + list(args),
        env=subprocess_env(), capture_output=True, text=True, cwd=cwd,
        timeout=TIMEOUT)


def test_demo_publishes_and_prints_the_history_twice(tmp_path):
    first = run('demo', cwd=str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert 'doc-1 (Report 1) is PUBLISHED; history: PUBLISHED by editor' \
        in first.stdout
    assert 'editor   Publish a document (publisher for site)' in first.stdout
    second = run('demo', '--db', str(tmp_path / 'var' / 'Data.fs'))
    assert second.returncode == 0, second.stderr
    assert 'doc-2 (Report 2) is PUBLISHED' in second.stdout
    db = DB(FileStorage(str(tmp_path / 'var' / 'Data.fs'), read_only=True))
    try:
        states = read(db, lambda r: {
            name: doc.state for name, doc in r['site'].items()})
    finally:
        db.close()
    assert states == {'doc': 'DRAFT', 'doc-1': 'PUBLISHED',
                      'doc-2': 'PUBLISHED'}


def test_no_command_is_a_usage_error():
    done = run()
    assert done.returncode == 2
    assert 'name a command' in done.stderr
    assert 'Traceback' not in done.stderr


def test_help_describes_the_demo():
    done = run('demo', '--help')
    assert done.returncode == 0
    assert 'FileStorage' in done.stdout
