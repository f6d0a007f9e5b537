"""The ``monitor`` command (private): the monitor pages of the durable
queues of a database, served on 127.0.0.1 (by default) to whoever shows
a token: the one printed at the start, or the first line of
``--password-file``."""
import hmac
import http.cookies
import signal
import socketserver
import sys
import threading
import urllib.parse
import wsgiref.simple_server

from cipher.background._cliopen import UsageError
from cipher.background._cliopen import open_database
from cipher.background.durable import DurableJobs
from cipher.background.monitor import MonitorApp
from cipher.background.monitor import Viewer

COOKIE = 'cipher_background_monitor'


class TokenGate:
    """WSGI middleware: ``app`` for who shows ``token`` (``?token=`` once,
    which sets a cookie for the rest; the cookie; or a header
    ``Authorization: Bearer TOKEN`` for scripts), 401 for anyone else.
    ``viewer(environ)`` is the Viewer of the monitor: the token holder has
    the monitor permission."""

    def __init__(self, app_factory, token):
        self.token = token
        self.app = app_factory(self.viewer)

    def _shown(self, environ):
        header = environ.get('HTTP_AUTHORIZATION', '')
        if header.startswith('Bearer ') and self._valid(header[7:]):
            return True
        cookies = http.cookies.SimpleCookie(environ.get('HTTP_COOKIE', ''))
        return COOKIE in cookies and self._valid(cookies[COOKIE].value)

    def _valid(self, given):
        return hmac.compare_digest(given.encode(), self.token.encode())

    def viewer(self, environ):
        return Viewer(None, monitor=True) if self._shown(environ) else None

    def __call__(self, environ, start_response):
        query = urllib.parse.parse_qs(environ.get('QUERY_STRING', ''))
        given = query.get('token', [''])[0]
        if given and self._valid(given):
            cookie = http.cookies.SimpleCookie()
            cookie[COOKIE] = self.token
            cookie[COOKIE]['httponly'] = True
            cookie[COOKIE]['samesite'] = 'Strict'
            cookie[COOKIE]['path'] = environ.get('SCRIPT_NAME') or '/'
            start_response('303 See Other', [
                ('Location', (environ.get('SCRIPT_NAME', '') +
                              environ.get('PATH_INFO', '')) or '/'),
                ('Set-Cookie', cookie[COOKIE].OutputString())])
            return [b'']
        return self.app(environ, start_response)


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # the access log of a dashboard
        pass


def read_token(path):
    """The first line of ``path``: the monitor's password."""
    try:
        with open(path, encoding='utf-8') as f:
            token = f.readline().strip()
    except OSError as exc:
        raise UsageError('cannot read the password file %s: %s'
                         % (path, exc.strerror))
    if len(token) < 12:
        raise UsageError('the password in %s is shorter than 12 characters;'
                         ' write a longer one on its first line' % path)
    return token


def run_monitor(args):
    import secrets
    token = read_token(args.password_file) if args.password_file \
        else secrets.token_urlsafe(24)
    db = open_database(args.zodb, args.connect_timeout)
    try:
        queues = [DurableJobs(db, name) for name in args.queue or
                  ['default']]
        gate = TokenGate(lambda viewer: MonitorApp(viewer, queues), token)
        try:
            server = wsgiref.simple_server.make_server(
                args.host, args.port, gate, server_class=_Server,
                handler_class=_QuietHandler)
        except OSError as exc:
            raise UsageError('cannot listen on %s:%d: %s'
                             % (args.host, args.port, exc.strerror))
        stop = threading.Event()
        handlers = {signum: signal.signal(signum, lambda *a: stop.set())
                    for signum in (signal.SIGTERM, signal.SIGINT,
                                   signal.SIGHUP)}
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        address = 'http://%s:%d/' % (args.host, server.server_port)
        if args.password_file:
            print('cipher-background: monitor at %s (the password is the '
                  'first line of %s)' % (address, args.password_file),
                  file=sys.stderr, flush=True)
        else:
            print('cipher-background: monitor at %s?token=%s' % (
                address, token), file=sys.stderr, flush=True)
        try:
            stop.wait()
        finally:
            server.shutdown()
            server.server_close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    finally:
        db.close()
    return 0
