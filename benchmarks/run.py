"""Run every benchmark; ``--quick`` for a run of under two minutes.

Each script prints a human line and a JSON line per measurement; this
prints the human lines as they come, then a Markdown table of all of
them (for benchmarks/README.md), with the date and the machine.
Exits non-zero if a script failed (a lost unit is a failure).
"""
import datetime
import json
import os
import platform
import subprocess
import sys

SCRIPTS = ['bench_worker.py', 'bench_conflicts.py', 'bench_scheduler.py',
           'bench_perform.py', 'bench_memory.py', 'bench_zeo.py',
           'bench_queue.py']


def _cell(summary):
    return '%.1f (%.1f..%.1f)' % (summary['median'], summary['min'],
                                  summary['max'])


def table(records):
    lines = ['| workload | unit | cipher.background | baseline | ratio '
             '| target |', '|---|---|---|---|---|---|']
    for r in records:
        target = ''
        if r.get('target') is not None:
            target = '>= %.2fx %s' % (r['target'],
                                      'met' if r['met'] else 'missed')
        elif 'met' in r.get('extra', {}):
            target = '< %s MiB %s' % (r['extra'].get('target_mib'),
                                      'met' if r['extra']['met'] else
                                      'missed')
        extra = ', '.join('%s=%s' % item for item in r['extra'].items()
                          if item[0] not in ('met', 'target_mib'))
        lines.append('| %s | %s | %s | %s | %s | %s |' % (
            r['workload'].strip() + (' (%s)' % extra if extra else ''),
            r['unit'], _cell(r['project']),
            _cell(r['baseline']) if 'baseline' in r else '',
            '%.2fx' % r['ratio'] if 'ratio' in r else '', target))
    return '\n'.join(lines)


def main():
    quick = '--quick' in sys.argv[1:]
    here = os.path.dirname(os.path.abspath(__file__))
    records, failed = [], []
    for script in SCRIPTS:
        print('--', script, flush=True)
        child = subprocess.Popen(
            [sys.executable, os.path.join(here, script)]
            + (['--quick'] if quick else []),
            cwd=here, stdout=subprocess.PIPE, text=True)
        for line in child.stdout:
            if line.startswith('{'):
                records.append(json.loads(line))
            else:
                print(line, end='', flush=True)
        if child.wait() != 0:
            failed.append(script)
    print()
    print('%s run of %s, Python %s, %s, %d cores' % (
        'Quick' if quick else 'Full',
        datetime.date.today().isoformat(), platform.python_version(),
        platform.machine(), os.cpu_count() or 1))
    print()
    print(table(records))
    if failed:
        print('\nFAILED: %s' % ', '.join(failed))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
