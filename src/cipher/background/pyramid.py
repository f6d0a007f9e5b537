"""The Pyramid host: ``config.include('cipher.background.pyramid')``.

In a Pyramid application with ZODB (pyramid_tm, pyramid_zodbconn) work
started in a request belongs to that request:

* it commits, or is dropped, with the request's transaction manager
  (``request.tm``), in pyramid_tm's default and explicit modes alike;
* it runs for the request's ``authenticated_userid``;
* its site is the request's traversal root (``request.root``) when that
  is a persistent object: a plain persistent root is a site here, and is
  set as the zope.component site only when it is one.

In the runner, the code reaches its connection with
:func:`cipher.background.current_connection`, its user's id with
:func:`cipher.background.current_user_id` (a job's status has it as
``principal``), and the user's principal in the zope.security
interaction, as in every host.

Pyramid keeps no user registry the runner could ask, so the user id the
request authenticated is trusted.  An application that can look its
users up names a function in its settings::

    cipher.background.find_user = myapp.users:find_user

``find_user(user_id, site)`` is called in the runner with the unit's site
(loaded in the unit's connection) and returns the user or None; None is
PrincipalNotFound and the work never runs.

The include also adds the monitor (:mod:`cipher.background.monitor`) at
``/background-monitor`` (the setting ``cipher.background.monitor_path``
moves it; ``off`` leaves it out).  An authenticated user sees the jobs
they started; a user with the permission ``cipher.background.monitor``
(the setting ``cipher.background.monitor_permission`` names another)
sees and acts on all of them and on the workers; anonymous requests are
answered 401.  The durable queue shown is the default queue of the
request's database (pyramid_zodbconn).  Behind several processes, give
them one ``cipher.background.monitor_secret`` (it signs the pages'
CSRF tokens).
"""
import secrets

from persistent import Persistent
from pyramid.request import call_app_with_subpath_as_path_info
from pyramid.threadlocal import get_current_request
from zope.interface import implementer
from zope.security.interfaces import IPrincipal
from zope.security.management import system_user

from cipher.background import sites
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import PrincipalNotFound
from cipher.background.host import ZopeSecurityHost
from cipher.background.host import set_host
from cipher.background.monitor import MonitorApp
from cipher.background.monitor import Viewer
from cipher.background.security import SYSTEM
from cipher.background.security import check_principal_id

SETTING = 'cipher.background.find_user'
MONITOR_PATH = 'cipher.background.monitor_path'
MONITOR_PERMISSION = 'cipher.background.monitor_permission'
MONITOR_SECRET = 'cipher.background.monitor_secret'
#: The permission that shows every job in the monitor.
DEFAULT_MONITOR_PERMISSION = 'cipher.background.monitor'


@implementer(IPrincipal)
class PyramidUser:
    """The principal of background work in a Pyramid application: the
    user id, and what ``find_user`` answered for it (or None)."""

    description = ''

    def __init__(self, id, user=None):
        self.id = id
        self.title = id
        self.user = user

    def __repr__(self):
        return '<PyramidUser %r>' % (self.id,)


class PyramidHost(ZopeSecurityHost):
    """Work of a Pyramid request: its transaction manager, its
    authenticated user, its traversal root (see the module)."""

    name = 'pyramid'

    def __init__(self, find_user=None):
        if find_user is not None and not callable(find_user):
            raise ArgumentTypeError(
                '%s must name a function find_user(user_id, site), not %r'
                % (SETTING, find_user))
        self.find_user = find_user

    # -- the caller's side --

    def current_user(self):
        request = get_current_request()
        if request is None:
            return super().current_user()
        return request.authenticated_userid

    def current_site(self):
        site = super().current_site()
        if site is not None:
            return site
        request = get_current_request()
        root = getattr(request, 'root', None)
        return root if isinstance(root, Persistent) else None

    def transaction_manager(self):
        return getattr(get_current_request(), 'tm', None)

    def check_user(self, user, site):
        # The request authenticated the user; Pyramid has no registry the
        # caller could ask (find_user runs in the runner, with the site).
        check_principal_id(user)

    def is_site(self, obj):
        return isinstance(obj, Persistent) or sites.is_site(obj)

    def not_a_site_message(self, obj):
        return ('%r is not a persistent object, so it cannot be the site '
                'of background work; pass the root of your application '
                "(request.root, or connection.root()['app_root'])" % (obj,))

    # -- the runner's side --

    def find_principal(self, principal_id, site):
        if principal_id is None:
            return None
        if principal_id == SYSTEM:
            return system_user
        user = None
        if self.find_user is not None:
            user = self.find_user(principal_id, site)
            if user is None:
                raise PrincipalNotFound(
                    '%s found no user %r; start the work as an existing '
                    'user' % (SETTING, principal_id))
        return PyramidUser(principal_id, user)

    def check_principal(self, principal, principal_id):
        if principal is None and principal_id is not None:
            raise PrincipalNotFound(
                'getPrincipal(%r) found no principal; the work never runs '
                'as nobody for a named user' % (principal_id,))


def includeme(config):
    """Make new background work of this process Pyramid work (see the
    module), with ``cipher.background.find_user`` from the settings."""
    settings = config.get_settings()
    find_user = settings.get(SETTING)
    set_host(PyramidHost(config.maybe_dotted(find_user)
                         if find_user else None))
    path = settings.get(MONITOR_PATH, '/background-monitor')
    if path != 'off':
        path = '/' + path.strip('/')
        config.add_route('cipher.background.monitor', path + '/*subpath')
        config.add_route('cipher.background.monitor-bare', path)
        # The monitor checks its own CSRF token (an application's
        # require_csrf would refuse its forms and scripts first).
        config.add_view(_MonitorView(settings), require_csrf=False,
                        route_name='cipher.background.monitor')
        config.add_view(_to_the_monitor, require_csrf=False,
                        route_name='cipher.background.monitor-bare')


class _MonitorView:
    """The monitor, answering for the request's user (see the module)."""

    def __init__(self, settings):
        self.permission = settings.get(MONITOR_PERMISSION,
                                       DEFAULT_MONITOR_PERMISSION)
        secret = settings.get(MONITOR_SECRET)
        self.secret = secret.encode('utf-8') if secret \
            else secrets.token_bytes(32)

    def __call__(self, request):
        userid = request.authenticated_userid
        viewer = None
        if userid is not None:
            viewer = Viewer(str(userid), monitor=bool(request.has_permission(
                self.permission, request.context)))
        request.environ['cipher.background.viewer'] = viewer
        app = MonitorApp(_viewer_of, _request_databases(request),
                         secret=self.secret)
        return call_app_with_subpath_as_path_info(request, app)


def _to_the_monitor(request):
    """The monitor's address without its slash: to the one with it."""
    from pyramid.httpexceptions import HTTPSeeOther
    return HTTPSeeOther(request.path + '/')


def _viewer_of(environ):
    return environ['cipher.background.viewer']


def _request_databases(request):
    """The database of the request's ZODB connection (pyramid_zodbconn),
    if it has one."""
    try:
        from pyramid_zodbconn import get_connection
        return [get_connection(request).db()]
    except Exception:  # no pyramid_zodbconn, or no database configured
        return []
