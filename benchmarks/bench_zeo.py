"""Workload 7: units per second with 1, 2 and 4 worker processes against
one ZEO server on 127.0.0.1.

Each process runs one BackgroundWorkerThread that adds 1 to its own
counter (no conflicts: the curve shows how the server and the two cores
are shared, not retries).  Baseline: the same processes running the raw
unit loop.  All processes of a run connect first, then start together.
"""
import subprocess
import sys
import time

from _common import ZEOServer, options, prepare, report, temporary_folder

CHILD = r'''
import sys
import transaction
import ZEO
sys.path.insert(0, sys.argv[5])
from _common import Incrementer, raw_units

port, kind, counter, units = int(sys.argv[1]), sys.argv[2], sys.argv[3], \
    int(sys.argv[4])
db = ZEO.DB(('127.0.0.1', port), wait_timeout=60)
conn = db.open()
site_oid = conn.root()['site']._p_oid
transaction.abort()
conn.close()

print('ready', flush=True)
sys.stdin.readline()   # go
if kind == 'worker':
    worker = Incrementer(db, site_oid, 'site', 'editor', units=units,
                         counter=counter)
    worker.start()
    worker.join()
else:
    raw_units(db, units, counter=counter)
print('done', flush=True)
db.close()
'''


def run(port, kind, processes, units):
    """Units per second of ``processes`` processes started together."""
    children = [subprocess.Popen(
        [sys.executable, '-c', CHILD, str(port), kind, 'counter%d' % n,
         str(units), sys.path[0]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for n in range(processes)]
    for child in children:
        assert child.stdout.readline() == 'ready\n'
    started = time.perf_counter()
    for child in children:
        child.stdin.write('go\n')
        child.stdin.flush()
    for child in children:
        assert child.stdout.readline() == 'done\n'
    elapsed = time.perf_counter() - started
    for child in children:
        child.stdin.close()
        child.stdout.close()
        child.wait(60)
    return processes * units / elapsed


def main():
    quick = options(__doc__).quick
    reps = 2 if quick else 5
    units = 300 if quick else 1000
    with temporary_folder() as folder:
        server = ZEOServer('%s/zeo.fs' % folder)
        try:
            db = server.db()
            prepare(db, counters=4)
            db.close()
            for processes in (1, 2, 4):
                ours, raw = [], []
                for _ in range(reps):
                    ours.append(run(server.port, 'worker', processes,
                                    units))
                    raw.append(run(server.port, 'raw', processes, units))
                report('7. ZEO, %d worker process(es)' % processes,
                       'units/s', ours, raw)
        finally:
            server.stop()


if __name__ == '__main__':
    main()
