"""A PostgreSQL server for the tests: Debian's binaries (installed by
.ci/run), a cluster in a temporary folder, run as a non-root user on
127.0.0.1, stopped through its own pid file."""
import glob
import os
import shutil
import subprocess
import tempfile

from helpers import TIMEOUT
from helpers import free_port

USER = 'cipher'


def bindir():
    """Where initdb and pg_ctl are, or None."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'),
                   key=lambda path: int(path.split('/')[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:

    def __init__(self):
        self.bin = bindir()
        self.folder = tempfile.mkdtemp(prefix='cipher-pg-')
        self.data = os.path.join(self.folder, 'data')
        self.port = free_port()
        self.started = False

    def _run(self, *args):
        command = [os.path.join(self.bin, args[0])] + list(args[1:])
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ['runuser', '-u', 'postgres', '--'] + command
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError('%s failed: %s' % (args[0], done.stderr
                                                  or done.stdout))
        return done

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.folder, 'postgres', 'postgres')
        self._run('initdb', '-D', self.data, '-U', USER, '--auth=trust',
                  '-E', 'UTF8', '--no-sync')
        self._run('pg_ctl', '-D', self.data, '-l',
                  os.path.join(self.folder, 'log'), '-w', '-o',
                  '-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off'
                  % (self.port, self.folder), 'start')
        self.started = True

    def create_database(self, name):
        self._run('psql', '-h', '127.0.0.1', '-p', str(self.port), '-U',
                  USER, '-d', 'postgres', '-c', 'CREATE DATABASE %s' % name)
        return 'postgres://%s@127.0.0.1:%d/%s?driver=psycopg2' % (
            USER, self.port, name)

    def stop(self):
        if self.started:  # pg_ctl signals the pid in its postmaster.pid
            self._run('pg_ctl', '-D', self.data, '-m', 'fast', '-w', 'stop')
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)
