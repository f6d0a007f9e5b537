"""Helpers shared by the tests: real databases, a ZEO server process."""
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage
from zope.component import hooks
from zope.security.management import endInteraction
from zope.security.management import queryInteraction

from cipher.background import demo

#: Generous limit for joins and waits: a loaded CI machine is slow, but a
#: test that hangs must still end.
TIMEOUT = 60


def add_site(db, users=('editor', 'admin'), name='site', **objects):
    """Commit a demo site (publisher, authentication, a draft 'doc') and
    ``objects`` (root key -> object) into ``db``; return the site's OID."""
    conn = db.open()
    try:
        site = demo.make_site(conn.root(), name, users=users)
        conn.root().update(objects)
        transaction.commit()
        return site._p_oid
    finally:
        transaction.abort()
        conn.close()


def thread_leftovers():
    """What a test left in its thread (a local site, an interaction), each
    cleared; the transaction is aborted."""
    leftovers = []
    if hooks.getSite() is not None:
        leftovers.append('a local site')
        hooks.setSite(None)
    if queryInteraction() is not None:
        leftovers.append('an interaction')
        endInteraction()
    transaction.abort()
    return leftovers


def read_file_storage(path, fn):
    """Call ``fn(root)`` on the FileStorage at ``path``, opened read-only
    (a database closed by the code under test)."""
    db = DB(FileStorage(str(path), read_only=True))
    try:
        return read(db, fn)
    finally:
        db.close()


def read(db, fn):
    """Call ``fn(root)`` in a fresh connection and return its result."""
    conn = db.open()
    try:
        return fn(conn.root())
    finally:
        transaction.abort()
        conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class ZEOServer:
    """A ZEO server in a subprocess on 127.0.0.1, on a FileStorage."""

    def __init__(self, path):
        self.path = str(path)
        self.port = free_port()
        self.address = ('127.0.0.1', self.port)
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'ZEO.runzeo',
             '-a', '127.0.0.1:%d' % self.port, '-f', self.path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(self.address, timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError('the ZEO server exited with %s'
                                       % self.process.returncode)
                if time.monotonic() > deadline:
                    raise RuntimeError('the ZEO server did not listen')
                time.sleep(0.05)  # polling a port, not waiting for a thread

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(TIMEOUT)
        self.process = None

    def db(self, **kwargs):
        import ZEO
        kwargs.setdefault('wait_timeout', TIMEOUT)
        return ZEO.DB(self.address, **kwargs)


def subprocess_env():
    """The environment for child Pythons: this package importable."""
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), 'src')
    env['PYTHONPATH'] = os.pathsep.join(
        [src, os.path.dirname(os.path.abspath(__file__))]
        + [p for p in [env.get('PYTHONPATH')] if p])
    return env


class SlowReplies:
    """A TCP relay on 127.0.0.1 to ``port`` that hands what the server
    sends to its client ``delay`` seconds late, in order (what the client
    sends passes at once): a distant server, for a ZEO client whose
    invalidations must arrive after the other client's commit returned.
    Connect to ``self.port``; ``close()`` ends it."""

    def __init__(self, port, delay):
        self.target, self.delay = port, delay
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(('127.0.0.1', self.target))
            self.sockets += [client, server]
            late = queue.Queue()
            for target, args in ((self._pass, (client, server)),
                                 (self._pass, (server, None, late)),
                                 (self._deliver, (late, client))):
                threading.Thread(target=target, args=args,
                                 daemon=True).start()

    def _pass(self, source, sink, late=None):
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b''
            if late is not None:
                late.put((time.monotonic() + self.delay, chunk))
            elif chunk:
                sink.sendall(chunk)
            if not chunk:
                return

    def _deliver(self, late, sink):
        while True:
            due, chunk = late.get()
            time.sleep(max(0.0, due - time.monotonic()))  # the link's delay
            try:
                if not chunk:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(chunk)
            except OSError:
                return

    def close(self):
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
