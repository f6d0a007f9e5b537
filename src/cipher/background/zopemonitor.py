"""The monitor in a Zope instance: the view ``@@background-monitor`` of a
site (and of the application root), registered by ``zope.zcml``.

Zope authenticates; the view asks Zope who the user is.  On a site it
shows the jobs of that site only: a user with the permission
``cipher.background: Monitor`` there (Manager, and whoever the site
grants it to) sees all of them and may act on them, any other
authenticated user sees the jobs they started there (users are told
apart by id, and a site's users are those its user folders know).  On
the application root, the permission shows every job of every site and
the workers of the process; without it, the jobs a user started on the
root.  Anonymous is answered 401.  The durable queue shown is the
default queue of the site's database.  Behind several ZEO clients, give
them one secret for the pages' CSRF tokens::

    <product-config cipher.background>
      monitor-secret a long random string
    </product-config>
"""
import io
import secrets
import urllib.parse

from AccessControl import getSecurityManager
from Acquisition import aq_base
from OFS.interfaces import IApplication
from Products.Five.browser import BrowserView
from zope.interface import implementer
from zope.publisher.interfaces import IPublishTraverse

from cipher.background.monitor import MonitorApp
from cipher.background.monitor import Viewer
from cipher.background.zope import product_config

#: The title of the permission that shows every job (its id in ZCML is
#: ``cipher.background.Monitor``).
MONITOR_PERMISSION = 'cipher.background: Monitor'

_secret = []  # made once per process, unless the product-config has one


def _monitor_secret():
    configured = product_config().get('monitor-secret')
    if configured:
        return configured.encode('utf-8')
    if not _secret:
        _secret.append(secrets.token_bytes(32))
    return _secret[0]


def _viewer_of(environ):
    return environ['cipher.background.viewer']


@implementer(IPublishTraverse)
class MonitorView(BrowserView):
    """Hands the request to the monitor's WSGI application, the names
    after the view in the URL being its path."""

    def __init__(self, context, request):
        super().__init__(context, request)
        self.subpath = []

    def publishTraverse(self, request, name):
        self.subpath.append(name)
        return self

    def viewer(self):
        manager = getSecurityManager()
        user = manager.getUser()
        if user is None or user.getUserName() == 'Anonymous User':
            return None
        return Viewer(user.getId() or user.getUserName(),
                      monitor=bool(manager.checkPermission(
                          MONITOR_PERMISSION, self.context)))

    def site(self, viewer):
        """The path of the site whose jobs are shown; None for all (the
        permission on the application root)."""
        path = '/'.join(self.context.getPhysicalPath()) or '/'
        if IApplication.providedBy(self.context) and viewer is not None \
                and viewer.monitor:
            return None
        return path

    def __call__(self):
        request, response = self.request, self.request.response
        script = urllib.parse.urlsplit(
            self.context.absolute_url() + '/@@background-monitor').path
        token = request.getHeader('X-CSRF-Token') or ''
        in_query = 'csrf_token' in urllib.parse.parse_qs(
            request.get('QUERY_STRING', ''))
        if not token and not in_query:  # never from a URL: logs keep them
            token = request.form.get('csrf_token', '')
        if not isinstance(token, str):  # csrf_token:list, say
            token = ''
        environ = {
            'REQUEST_METHOD': request.get('REQUEST_METHOD', 'GET'),
            'SCRIPT_NAME': script,
            'PATH_INFO': '/' + '/'.join(self.subpath),
            'QUERY_STRING': request.get('QUERY_STRING', ''),
            'HTTP_ACCEPT': request.getHeader('Accept') or '',
            'HTTP_X_CSRF_TOKEN': token,
            'CONTENT_LENGTH': '0', 'wsgi.input': io.BytesIO(),
            'cipher.background.viewer': self.viewer()}
        app = MonitorApp(_viewer_of, [aq_base(self.context)._p_jar.db()],
                         secret=_monitor_secret(),
                         site=self.site(environ['cipher.background.viewer']))
        answer = {}

        def start_response(status, headers):
            answer['status'], answer['headers'] = status, headers
        body = b''.join(app(environ, start_response))
        response.setStatus(int(answer['status'].split()[0]))
        for name, value in answer['headers']:
            if name.lower() != 'content-length':
                response.setHeader(name, value)
        return body
