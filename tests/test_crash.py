"""Crash consistency: a worker process killed with SIGKILL at any moment
leaves a FileStorage that opens and holds whole units only."""
import signal
import subprocess
import sys

from ZODB import DB
from ZODB.FileStorage import FileStorage

from helpers import TIMEOUT
from helpers import read
from helpers import subprocess_env

NOTE = 'crash-test unit'

SCRIPT = '''
import sys
import transaction
from persistent.mapping import PersistentMapping
from ZODB import DB
from ZODB.FileStorage import FileStorage
from zope.component import hooks
from cipher.background.thread import BackgroundWorkerThread
from helpers import add_site

db = DB(FileStorage(sys.argv[1]))
conn = db.open()
if 'site' not in conn.root():
    add_site(db)
    conn.root()['a'] = PersistentMapping(value=0)
    conn.root()['b'] = PersistentMapping(value=0)
    transaction.commit()
site_oid = conn.root()['site']._p_oid
conn.close()

def committed(ok):
    if ok:
        print('committed', flush=True)

class TwoTogether(BackgroundWorkerThread):
    """Each unit changes a and b together, with enough data that the kill
    often lands while the commit is being written."""
    work_transaction_note = %(note)r

    def scheduleNextWork(self):
        return True

    def doWork(self):
        root = hooks.getSite()._p_jar.root()
        for key in 'ab':
            root[key]['value'] += 1
            root[key]['payload'] = str(root[key]['value']) * 20000
        transaction.get().addAfterCommitHook(committed)

worker = TwoTogether(db, site_oid, 'site', 'editor')
worker.start()
worker.join()  # until killed
'''


def committed_units(path):
    """The number of committed transactions that carry the unit's note."""
    storage = FileStorage(path, read_only=True)
    try:
        return sum(1 for txn in storage.iterator()
                   if txn.description == NOTE.encode())
    finally:
        storage.close()


def test_sigkill_at_any_moment_leaves_whole_units_only(tmp_path):
    path = str(tmp_path / 'Data.fs')
    script = SCRIPT % dict(note=NOTE)
    seen = set()
    for round_number in range(24):
        child = subprocess.Popen(
            [sys.executable, '-c', script, path], env=subprocess_env(),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            # Kill after 1 to 4 commits of this run: the next unit is then
            # somewhere between doWork and the end of its commit.
            for _ in range(1 + round_number % 4):
                assert child.stdout.readline() == 'committed\n'
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(TIMEOUT)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        db = DB(FileStorage(path))  # opens, after whatever was cut off
        try:
            a, b = read(db, lambda r: (r['a']['value'], r['b']['value']))
        finally:
            db.close()
        assert a == b == committed_units(path)
        seen.add(a)
    assert len(seen) == 24  # every round committed units and kept them
