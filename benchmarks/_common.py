"""Shared by the benchmark scripts: storages, timing, and reporting.

Every script measures cipher.background and its baseline in the same run,
repeats each measurement, and reports medians with min and max, the ratio,
and a JSON line (starting with '{') for machines.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import transaction
from persistent import Persistent
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

from zope.component import hooks

from cipher.background import BackgroundWorkerThread
from cipher.background import demo


class Counter(Persistent):
    """The object units change."""

    value = 0


class Incrementer(BackgroundWorkerThread):
    """Does ``units`` units, each adding 1 to root[``counter``]; with a
    ``barrier``, waits there before the first unit."""

    def __init__(self, *args, units=0, counter='counter0', barrier=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.remaining = units
        self.counter = counter
        self.barrier = barrier

    def scheduleNextWork(self):
        if self.barrier is not None:
            self.barrier.wait()
            self.barrier = None
        self.remaining -= 1
        return self.remaining >= 0

    def doWork(self):
        hooks.getSite()._p_jar.root()[self.counter].value += 1


def options(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--quick', action='store_true',
                        help='fewer units and repetitions')
    return parser.parse_args()


def open_db(kind, folder):
    """A fresh database: 'mapping' or 'file' (in ``folder``)."""
    if kind == 'mapping':
        return DB(MappingStorage())
    path = os.path.join(folder, 'Data-%s.fs' % time.monotonic_ns())
    return DB(FileStorage(path))


def prepare(db, counters=1):
    """Add the demo site and ``counters`` counters; return the site OID."""
    conn = db.open()
    root = conn.root()
    site = demo.make_site(root, 'site')
    for n in range(counters):
        root['counter%d' % n] = Counter()
    transaction.commit()
    oid = site._p_oid
    conn.close()
    return oid


def raw_units(db, units, counter='counter0', user=None, note=None):
    """The baseline: open a pooled connection, change one object, commit,
    close; ``units`` times.  Returns units per second.  With ``user`` and
    ``note`` each transaction records them, as a worker's does."""
    started = time.perf_counter()
    for _ in range(units):
        conn = db.open()
        if note is not None:
            txn = transaction.get()
            txn.user, txn.description = user or '', note
        conn.root()[counter].value += 1
        transaction.commit()
        conn.close()
    return units / (time.perf_counter() - started)


def summary(values):
    return dict(median=statistics.median(values), min=min(values),
                max=max(values), n=len(values))


def report(workload, unit, project, baseline=None, higher_is_better=True,
           target=None, **extra):
    """Print a human line and a JSON line; return the ratio (or None)."""
    p = summary(project)
    line = '%-44s %10.1f %-8s (%.1f..%.1f)' % (
        workload, p['median'], unit, p['min'], p['max'])
    ratio = None
    record = dict(workload=workload, unit=unit, project=p, extra=extra)
    if baseline is not None:
        b = summary(baseline)
        ratio = (p['median'] / b['median'] if higher_is_better
                 else b['median'] / p['median'])
        line += '  baseline %10.1f (%.1f..%.1f)  ratio %.2fx' % (
            b['median'], b['min'], b['max'], ratio)
        record.update(baseline=b, ratio=round(ratio, 3))
    if target is not None:
        met = ratio >= target if ratio is not None else None
        line += '  target >= %.2fx: %s' % (target, 'met' if met else 'MISSED')
        record.update(target=target, met=met)
    for key, value in extra.items():
        line += '  %s=%s' % (key, value)
    print(line, flush=True)
    print(json.dumps(record), flush=True)
    return ratio


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def temporary_folder():
    return tempfile.TemporaryDirectory(prefix='cipher-bench-')


class ZEOServer:
    """A ZEO server subprocess on 127.0.0.1 with a FileStorage."""

    def __init__(self, path):
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'ZEO.runzeo', '-a',
             '127.0.0.1:%d' % self.port, '-f', path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError('ZEO server did not start')
                time.sleep(0.05)

    def db(self):
        import ZEO
        return ZEO.DB(('127.0.0.1', self.port), wait_timeout=60)

    def stop(self):
        self.process.terminate()
        self.process.wait(60)


class RedisServer:
    """Debian's redis-server on 127.0.0.1 for the Celery baseline: installed
    with apt-get when missing (as root), run as the ``redis`` user when
    this is root, keeping nothing on disk, stopped by the pid in its pid
    file.  ``url`` is the broker's address."""

    BINARY = '/usr/bin/redis-server'

    def __init__(self):
        install_debian_package('redis-server', self.BINARY)
        self.folder = tempfile.mkdtemp(prefix='cipher-redis-')
        command = [self.BINARY, '--port', str(_free_port()),
                   '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                   '--dir', self.folder, '--daemonize', 'yes',
                   '--pidfile', os.path.join(self.folder, 'redis.pid'),
                   '--logfile', os.path.join(self.folder, 'redis.log')]
        self.port = int(command[2])
        if os.geteuid() == 0:
            shutil.chown(self.folder, 'redis', 'redis')
            command = ['runuser', '-u', 'redis', '--'] + command
        subprocess.run(command, check=True, timeout=60)
        self.url = 'redis://127.0.0.1:%d/0' % self.port
        self.pid = None
        deadline = time.monotonic() + 60
        while self.pid is None:
            try:
                with open(os.path.join(self.folder, 'redis.pid')) as f:
                    self.pid = int(f.read())
                socket.create_connection(('127.0.0.1', self.port), 1).close()
            except (OSError, ValueError):
                self.pid = None
                if time.monotonic() > deadline:
                    raise RuntimeError('redis-server did not start')
                time.sleep(0.05)

    def stop(self):
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while os.path.exists(os.path.join(self.folder, 'redis.pid')):
            if time.monotonic() > deadline:
                raise RuntimeError('redis-server did not stop')
            time.sleep(0.05)  # it removes its pid file as it ends
        shutil.rmtree(self.folder)


def install_debian_package(package, path):
    """Install Debian's ``package`` unless ``path`` exists (root only)."""
    if os.path.exists(path):
        return
    if os.geteuid() != 0:
        raise RuntimeError('%s is missing: apt-get install %s'
                           % (path, package))
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run(['apt-get', 'update', '-qq'], check=True, env=env)
    subprocess.run(['apt-get', 'install', '-y', '-qq', package], check=True,
                   env=env)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
