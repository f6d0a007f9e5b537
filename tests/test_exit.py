"""At interpreter exit, live workers finish their unit: nothing is cut
mid-commit and nothing is printed about dying threads."""
import subprocess
import sys

import pytest
from ZODB import DB
from ZODB.FileStorage import FileStorage

from helpers import TIMEOUT
from helpers import read
from helpers import subprocess_env

SCRIPT = '''
import sys, threading
from ZODB import DB
from ZODB.FileStorage import FileStorage
from zope.component import hooks
from cipher.background.thread import BackgroundWorkerThread
from helpers import add_site

db = DB(FileStorage(sys.argv[1]))
in_unit = threading.Event()

class MidUnit(BackgroundWorkerThread):
    def scheduleNextWork(self):
        return not self.stopped

    def doWork(self):
        in_unit.set()
        self.wait(600)  # until the exit hook asks the worker to stop
        root = hooks.getSite()._p_jar.root()
        root['a'] = root.get('a', 0) + 1
        root['b'] = root.get('b', 0) + 1

worker = MidUnit(db, add_site(db), 'site', None, daemon=%(daemon)s)
worker.start()
assert in_unit.wait(600)
print('main thread ends while the worker is mid-unit', flush=True)
'''


@pytest.mark.parametrize('daemon', [True, False])
def test_exit_lets_the_current_unit_commit(tmp_path, daemon):
    path = str(tmp_path / 'Data.fs')
    done = subprocess.run(
        [sys.executable, '-c', SCRIPT % dict(daemon=daemon), path],
        env=subprocess_env(), capture_output=True, text=True,
        timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert 'mid-unit' in done.stdout
    assert done.stderr == ''
    db = DB(FileStorage(path, read_only=True))
    try:
        assert read(db, lambda r: (r['a'], r['b'])) == (1, 1)
    finally:
        db.close()
