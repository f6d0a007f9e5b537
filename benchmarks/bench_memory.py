"""Workload 5: memory after many jobs, with the default job retention.

A fresh Python process runs two rounds of no-op ZODB jobs (100,000 each;
20,000 with --quick) through perform()'s default scheduler and job store,
and reports its resident set size after each round.  The first round
fills what is kept by design (the last 1,000 finished jobs, connection
caches, the pool's threads); the second must grow the process by less
than 5 MiB.  Baseline: the same process before any job ran.
"""
import json
import subprocess
import sys

from _common import options, report

CHILD = r'''
import gc, json, sys
import transaction
from ZODB import DB
from ZODB.MappingStorage import MappingStorage
sys.path.insert(0, sys.argv[2])
from _common import prepare
from cipher.background import jobs
from cipher.background.context import load_site

def rss_mib():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0

def noop():
    pass

db = DB(MappingStorage())
conn = db.open()
site = load_site(conn, prepare(db))
count = int(sys.argv[1])
gc.collect()
sizes = [rss_mib()]
for round_number in range(2):
    last = None
    for _ in range(count):
        last = jobs.submit(noop, site=site, after_commit=False, user='editor')
        if len(jobs.get_job_store()) > 5000:  # keep the queue short
            jobs.wait(last, 600)
    jobs.wait(last, 600)
    gc.collect()
    sizes.append(rss_mib())
print(json.dumps(dict(sizes=sizes, kept=len(jobs.get_job_store()))))
'''


def measure(count):
    done = subprocess.run(
        [sys.executable, '-c', CHILD, str(count), sys.path[0]],
        capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main():
    quick = options(__doc__).quick
    count = 20000 if quick else 100000
    reps = 1 if quick else 3
    before, first, growth, kept = [], [], [], []
    for _ in range(reps):
        result = measure(count)
        start, after_first, after_second = result['sizes']
        before.append(start)
        first.append(after_first)
        growth.append(after_second - after_first)
        kept.append(result['kept'])
    report('5. RSS before any job', 'MiB', before)
    report('   RSS after round 1 of %d jobs' % count, 'MiB', first)
    report('5. growth in round 2 of %d jobs' % count, 'MiB', growth,
           target_mib=5, met=max(growth) < 5, jobs_kept=max(kept))


if __name__ == '__main__':
    main()
