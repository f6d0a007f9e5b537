"""The ``monitor`` command (private): the monitor pages of the durable
queues of a database, served on 127.0.0.1 (by default) to whoever shows
a token: the one printed at the start, or the first line of
``--password-file``."""
import hashlib
import hmac
import http.cookies
import ipaddress
import os
import secrets
import signal
import socket
import socketserver
import stat
import sys
import threading
import urllib.parse
import wsgiref.simple_server

from cipher.background._cliopen import UsageError
from cipher.background._cliopen import open_database
from cipher.background.durable import DurableJobs
from cipher.background.monitor import MonitorApp
from cipher.background.monitor import Viewer


class TokenGate:
    """WSGI middleware: ``app`` for who shows ``token`` (``?token=`` once,
    which sets a cookie for the rest; the cookie; or a header
    ``Authorization: Bearer TOKEN`` for scripts), 401 for anyone else.
    ``viewer(environ)`` is the Viewer of the monitor: the token holder has
    the monitor permission.

    The cookie is not the token: it is a value made from it for this
    process (a cookie for 127.0.0.1 goes to every port of the machine),
    named after the port (two monitors do not log each other out).
    """

    def __init__(self, app_factory, token, port):
        self.token = token
        self.cookie_name = 'cipher_background_monitor_%d' % port
        self.cookie_value = hmac.new(
            secrets.token_bytes(32), token.encode('utf-8'),
            hashlib.sha256).hexdigest()
        self.app = app_factory(self.viewer)

    def _shown(self, environ):
        header = environ.get('HTTP_AUTHORIZATION', '')
        if header.startswith('Bearer ') and _same(header[7:], self.token):
            return True
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(environ.get('HTTP_COOKIE', ''))
        except http.cookies.CookieError:
            return False
        morsel = cookies.get(self.cookie_name)
        return morsel is not None and _same(morsel.value, self.cookie_value)

    def viewer(self, environ):
        return Viewer(None, monitor=True) if self._shown(environ) else None

    def __call__(self, environ, start_response):
        query = urllib.parse.parse_qsl(environ.get('QUERY_STRING', ''),
                                       keep_blank_values=True)
        given = [value for name, value in query if name == 'token']
        if given and _same(given[0], self.token):
            # To the same page without the token (kept out of the history,
            # the logs and Referer headers), its other parameters kept.
            path = '/' + (environ.get('SCRIPT_NAME', '') +
                          environ.get('PATH_INFO', '')).lstrip('/')
            rest = urllib.parse.urlencode(
                [(name, value) for name, value in query if name != 'token'])
            location = urllib.parse.quote(path) + ('?' + rest if rest else '')
            cookie = http.cookies.SimpleCookie()
            cookie[self.cookie_name] = self.cookie_value
            morsel = cookie[self.cookie_name]
            morsel['httponly'] = True
            morsel['samesite'] = 'Strict'
            morsel['path'] = '/'
            start_response('303 See Other', [
                ('Location', location),
                ('Set-Cookie', morsel.OutputString()),
                ('Referrer-Policy', 'no-referrer')])
            return [b'']
        return self.app(environ, start_response)


def _same(given, expected):
    try:
        return hmac.compare_digest(given.encode('utf-8'),
                                   expected.encode('utf-8'))
    except UnicodeError:
        return False


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # the access log of a dashboard
        pass


def read_token(path):
    """The first line of the file ``path``: the monitor's password (12
    printable ASCII characters at least, in a file only its owner may
    read).  UsageError for anything else, before the server starts."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError('cannot read the password file %s: %s'
                         % (path, exc.strerror))
    with os.fdopen(fd, 'rb') as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError('the password file %s is not a regular file'
                             % path)
        if info.st_mode & 0o077:
            raise UsageError('the password file %s may be read by others; '
                             'chmod 600 it' % path)
        first = f.readline(4096)
    try:
        token = first.decode('utf-8-sig').strip()
    except UnicodeDecodeError:
        token = None
    if token is None or not (token.isascii() and token.isprintable()):
        raise UsageError('the password in %s must be printable ASCII '
                         '(letters, digits, punctuation)' % path)
    if len(token) < 12:
        raise UsageError('the password in %s is shorter than 12 characters;'
                         ' write a longer one on its first line' % path)
    return token


def run_monitor(args):
    token = read_token(args.password_file) if args.password_file \
        else secrets.token_urlsafe(24)
    db = open_database(args.zodb, args.connect_timeout)
    try:
        queues = [DurableJobs(db, name) for name in args.queue or
                  ['default']]
        try:
            server = wsgiref.simple_server.make_server(
                args.host, args.port, None, server_class=_Server,
                handler_class=_QuietHandler)
        except OSError as exc:
            raise UsageError('cannot listen on %s:%d: %s'
                             % (args.host, args.port, exc.strerror))
        server.set_app(TokenGate(lambda viewer: MonitorApp(viewer, queues),
                                 token, server.server_port))
        if not ipaddress.ip_address(
                socket.gethostbyname(args.host)).is_loopback:
            print('cipher-background: warning: the monitor is served on %s '
                  'over plain HTTP: put it behind HTTPS, or keep it on '
                  '127.0.0.1' % args.host, file=sys.stderr, flush=True)
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
