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

worker = MidUnit(db, add_site(db), 'site', 'editor', daemon=%(daemon)s)
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


SEVERAL = '''
import atexit, sys, threading
import transaction
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.FileStorage import FileStorage
from zope.component import hooks
from cipher.background.thread import BackgroundWorkerThread
from helpers import add_site

db = DB(FileStorage(sys.argv[1]))
atexit.register(db.close)  # runs after the workers' exit hook
all_in_unit = threading.Barrier(4)

class Pair(BackgroundWorkerThread):
    """Each unit adds 1 to a and to b of its own pair."""

    def scheduleNextWork(self):
        return not self.stopped

    def doWork(self):
        pair = hooks.getSite()._p_jar.root()['pairs'][self.key]
        pair['a'] += 1
        if not self.waited:   # the first unit waits until all are in one
            self.waited = True
            all_in_unit.wait(600)
        pair['b'] += 1

site_oid = add_site(db)
conn = db.open()
conn.root()['pairs'] = {n: PersistentMapping(a=0, b=0) for n in range(3)}
transaction.commit()
conn.close()
for n in range(3):
    worker = Pair(db, site_oid, 'site', 'editor', daemon=bool(n %% 2))
    worker.key, worker.waited = n, False
    worker.start()
all_in_unit.wait(600)
print('main thread ends while three workers are mid-unit', flush=True)
'''


def test_exit_with_several_workers_mid_unit_closes_the_database(tmp_path):
    path = str(tmp_path / 'Data.fs')
    done = subprocess.run(
        [sys.executable, '-c', SEVERAL % {}, path],
        env=subprocess_env(), capture_output=True, text=True,
        timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert 'three workers are mid-unit' in done.stdout
    assert done.stderr == ''  # no "Exception in thread", no warnings
    # FileStorage writes its index only when it is closed.
    assert (tmp_path / 'Data.fs.index').exists()
    db = DB(FileStorage(path, read_only=True))
    try:
        pairs = read(db, lambda r: [dict(p) for p in r['pairs'].values()])
    finally:
        db.close()
    assert len(pairs) == 3
    for pair in pairs:   # each unit fully committed or not at all
        assert pair['a'] == pair['b'] >= 1
