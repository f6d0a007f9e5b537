"""The Zope host: background work of a Zope 5/6 (or Plone) application.

Wired by the library's ``configure.zcml`` when ``Products.Five`` is
importable, so ``<include package="cipher.background" />`` is all a Zope
application does: when the database opens,
:mod:`cipher.background.zopeinstance` makes :class:`ZopeHost` the host of
new work.

In the caller (a request, a ``zconsole`` script) work belongs to:

* the user of AccessControl's security manager (the id, not the login),
  unless a user is named; Anonymous is no user, and work without a user
  is refused (PrincipalRequired), since Zope checks security everywhere;
* the zope.component site the publisher set: an OFS folder made a site
  (ZMI ``@@components.html`` "Make site", or
  ``five.localsitemanager.make_objectmanager_site``);
* the thread's transaction, which the publisher commits.

In the runner, around each unit and each job:

* the site and persistent arguments are acquisition-wrapped from the
  application root, under a fake request whose ``SERVER_URL`` is
  ``server-url`` of ``<product-config cipher.background>`` (default
  ``http://localhost:8080``), found by the physical path the caller saw
  (:meth:`ZopeHost.locate`);
* the user is looked up in the user folders (standard ones and
  PluggableAuthService) from the site up to the application, as the
  publisher does; an unknown id is PrincipalNotFound and never runs;
* AccessControl's security manager is set for that user, with a
  zope.security interaction of the configured policy (as the publisher
  sets one per request), and the fake request is the thread's
  (``zope.globalrequest.getRequest()``, its ``AUTHENTICATED_USER`` the
  user); all three are cleared after the unit;
* the transaction's user is written the way the publisher writes it,
  so the Undo tab says "by admin".

zope.conf may say::

    <product-config cipher.background>
      server-url https://www.example.com
      start-workers off
    </product-config>

``start-workers`` is ``on`` (the default: on, except in ``zconsole``),
``off``, or ``always`` (``zconsole`` too); the environment variable
``CIPHER_BACKGROUND_START_WORKERS`` overrides it per process.
"""
import threading
import weakref

from AccessControl import SpecialUsers
from AccessControl.SecurityManagement import getSecurityManager
from AccessControl.SecurityManagement import newSecurityManager
from AccessControl.SecurityManagement import noSecurityManager
from AccessControl.SecurityManagement import setSecurityManager
from Acquisition import aq_base
from Acquisition import aq_chain
from Acquisition import aq_inner
from Acquisition import aq_parent
from OFS.interfaces import IApplication
from OFS.interfaces import IObjectManager
from zExceptions import Unauthorized
from zope.component import hooks
from zope.component.interfaces import ISite
from zope.globalrequest import clearRequest
from zope.globalrequest import getRequest
from zope.globalrequest import setRequest
from zope.interface import implementer
from zope.interface.interfaces import ComponentLookupError
from zope.security.management import newInteraction
from zope.security.management import queryInteraction

from cipher.background import security
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import PrincipalRequired
from cipher.background.errors import SiteNotFound
from cipher.background.host import ZopeSecurityHost
from cipher.background.interfaces import IHost
from cipher.background.scope import current_connection
from cipher.background.security import SYSTEM

#: The key of the Zope application in the database root.
APPLICATION = 'Application'
#: The name of this library's ``<product-config>`` section in zope.conf.
PRODUCT = 'cipher.background'
DEFAULT_SERVER_URL = 'http://localhost:8080'


class LoginRequired(PrincipalRequired, Unauthorized):
    """PrincipalRequired in Zope when nobody is logged in: also Zope's
    Unauthorized, so in a request the publisher asks the browser to log
    in (401) instead of answering an error page."""

    def __init__(self, message):
        PrincipalRequired.__init__(self, message)
        Unauthorized.__init__(self, message)

    def __str__(self):
        return PrincipalRequired.__str__(self)


def product_config():
    """The ``<product-config cipher.background>`` section of zope.conf as
    a dict of str (keys as written), or {}."""
    from App.config import getConfiguration
    sections = getattr(getConfiguration(), 'product_config', None) or {}
    return sections.get(PRODUCT) or {}


def _path(obj):
    return '/'.join(obj.getPhysicalPath()) or '/'


def _user_folders(obj):
    """The user folders from ``obj`` (wrapped) up to the application,
    innermost first, each wrapped in its container: the ones the
    publisher asks, in its order."""
    folders = []
    while obj is not None:
        # The object's own (standard user folders and PAS set it on their
        # container when added), not one acquired from above.
        if getattr(aq_base(obj), '__allow_groups__', None) is not None:
            folders.append(obj.__allow_groups__)
        obj = aq_parent(aq_inner(obj))
    return folders


def _is_nobody(user):
    return user is None or aq_base(user) is aq_base(SpecialUsers.nobody) \
        or user.getUserName() == 'Anonymous User'


@implementer(IHost)
class ZopeHost(ZopeSecurityHost):
    """Background work of a Zope application (see the module).
    ``server_url`` is what ``absolute_url()`` starts with in the runner
    (default: the product-config's ``server-url``)."""

    name = 'zope'

    def __init__(self, server_url=None):
        if server_url is None:
            server_url = product_config().get('server-url',
                                              DEFAULT_SERVER_URL)
        if not isinstance(server_url, str) or '://' not in server_url:
            raise ConfigurationError(
                'server-url must be a URL such as https://www.example.com, '
                'not %r' % (server_url,))
        self.server_url = server_url.rstrip('/')
        # connection -> (its transaction, the wrapped application): one
        # fake request per unit, shared by its site and its arguments.
        self._apps = weakref.WeakKeyDictionary()
        self._apps_lock = threading.Lock()

    # -- the caller's side --

    def current_user(self):
        user = getSecurityManager().getUser()
        if _is_nobody(user):
            return None
        if aq_base(user) is aq_base(SpecialUsers.system):
            return SYSTEM
        user_id = user.getId()
        if not user_id:
            raise ConfigurationError(
                'the current Zope user %r has no id; name the user of the '
                'background work' % (user,))
        return user_id

    def current_site(self):
        return hooks.getSite()  # set by the publisher, wrapped

    def transaction_manager(self):
        return None  # the publisher commits the thread's transaction

    def check_user(self, user, site):
        security.check_principal_id(user)
        if user == SYSTEM:
            return
        if user is None:
            raise LoginRequired(
                'no user is named for this background work and nobody is '
                'logged in; Zope checks security everywhere, so the work '
                'would run with every permission. Start it from a request '
                'of a logged-in user, name the user (user_name=... or '
                'user=...), or pass cipher.background.SYSTEM to run '
                'unchecked on purpose')
        if site is None:
            return  # looked up from the application in the runner
        found = self._lookup(user, site)
        if found is None:
            raise PrincipalNotFound(self._unknown(user, site))
        # The caller's own user must be the one the runner will find: the
        # 'bob' of /acl_users must not become the 'bob' of a site's.
        mine = getSecurityManager().getUser()
        if not _is_nobody(mine) and mine.getId() == user:
            mine, theirs = aq_parent(mine), aq_parent(found)
            if mine is not None and theirs is not None and (
                    mine.getPhysicalPath() != theirs.getPhysicalPath()):
                raise PrincipalNotFound(
                    'you are %r of %s, but from %s that id names the user '
                    'of %s; name a user of that site, or start the work '
                    'from the site whose user you are' % (
                        user, _path(mine), _path(site), _path(theirs)))

    def is_site(self, obj):
        if not ISite.providedBy(obj):
            return False
        try:
            return obj.getSiteManager() is not None
        except (ComponentLookupError, AttributeError):
            return False

    def not_a_site_message(self, obj):
        if not IObjectManager.providedBy(obj):
            return ('%r is not a site, and cannot be made one (it is no '
                    'folder); pass the site itself, such as '
                    'zope.component.hooks.getSite() in a request' % (obj,))
        path = '/'.join(obj.getPhysicalPath())  # '' for the application
        return (
            '%r is not a site (it has no local component registry); make '
            'it one: in the ZMI open %s/@@components.html and press "Make '
            'site", or in Python call five.localsitemanager.'
            'make_objectmanager_site(folder) (Products.Five.component.'
            'enableSite() alone gives it no site manager); or pass the '
            'site itself' % (obj, path))

    def locate(self, obj):
        """The physical path of ``obj`` when it is acquisition-wrapped up
        to the application (as objects of a request are), else None."""
        try:
            path = tuple(obj.getPhysicalPath())
        except Exception:
            return None
        # An unwrapped object answers its id alone; a wrapped one has the
        # application in its chain (under the request's container).
        if not path or path[0] != '' or not any(
                IApplication.providedBy(item) for item in aq_chain(obj)):
            return None
        return path

    # -- the runner's side --

    def application(self, connection):
        """The application of ``connection`` wrapped in a fake request
        (``SERVER_URL`` is :attr:`server_url`), one per connection and
        transaction."""
        txn = connection.transaction_manager.get()
        with self._apps_lock:
            cached = self._apps.get(connection)
        if cached is not None and cached[0] is txn:
            return cached[1]
        from Testing.makerequest import makerequest
        try:
            app = connection.root()[APPLICATION]
        except KeyError:
            raise SiteNotFound(
                "the database has no Zope application (root()['%s']): "
                'open the database of the Zope instance' % APPLICATION
            ) from None
        app = makerequest(app, environ={'SERVER_URL': self.server_url})
        app.REQUEST['PARENTS'] = [app]
        with self._apps_lock:
            self._apps[connection] = (txn, app)
        return app

    def load(self, connection, oid, hint=None):
        app = self.application(connection)
        if oid == aq_base(app)._p_oid:
            return app
        raw = connection.get(oid)  # POSKeyError when it is gone
        if hint is not None:
            try:
                obj = app.unrestrictedTraverse(hint)
            except (KeyError, AttributeError, LookupError):
                obj = None
            if obj is not None and aq_base(obj)._p_oid == oid:
                return obj
            raise KeyError(
                '%r (OID %r) is no longer at %s: it was moved, renamed or '
                'removed since the work was asked for'
                % (raw, oid, '/'.join(hint) or '/'))
        # Objects that keep their container (zope.container style) can be
        # wrapped without a path.
        chain, obj = [], aq_base(raw)
        while obj is not None and aq_base(obj)._p_oid != aq_base(app)._p_oid:
            chain.append(obj)
            obj = getattr(obj, '__parent__', None)
        if obj is None:
            raise ConfigurationError(
                'cannot tell where %r (OID %r) is in the Zope application: '
                'it was handed over unwrapped; pass objects as the request '
                'sees them (acquisition-wrapped)' % (raw, oid))
        wrapped = app
        for item in reversed(chain):
            wrapped = aq_base(item).__of__(wrapped)
        return wrapped

    def find_site(self, connection, path):
        """The site at ``path``, a Zope path from the application such as
        '/bgsite', by the containers' own items (never acquired)."""
        if not isinstance(path, str):
            raise ArgumentTypeError('a site path must be a str such as '
                                    "'/site', not %r" % (path,))
        obj, walked = self.application(connection), ''
        for name in [part for part in path.split('/') if part]:
            base = aq_base(obj)
            if not callable(getattr(base, 'hasObject', None)) or \
                    not base.hasObject(name):
                ids = sorted(obj.objectIds()) if callable(
                    getattr(base, 'objectIds', None)) else []
                raise SiteNotFound(
                    'no %r in %s (%s): the site path %r does not exist; '
                    'create the site first, or give its path from the Zope '
                    'application root' % (
                        name, walked or 'the application root',
                        'it holds %s' % ', '.join(map(repr, ids[:10]))
                        if ids else 'it holds nothing', path))
            obj = obj._getOb(name)
            walked += '/' + name
        if not self.is_site(obj):
            raise NotASite(self.not_a_site_message(obj))
        return obj

    def _lookup(self, principal_id, start):
        for folder in _user_folders(start):
            user = folder.getUserById(principal_id)
            if user is not None:
                if aq_parent(user) is None:
                    user = user.__of__(folder)
                return user
        return None

    def _unknown(self, principal_id, start):
        return ('no user folder from %s up to the application knows the '
                'user id %r; start the work as an existing user'
                % (_path(start), principal_id))

    def find_principal(self, principal_id, site):
        if principal_id == SYSTEM:
            return SpecialUsers.system
        if principal_id is None:
            raise PrincipalRequired(
                'no user is named for this background work, and Zope '
                'checks security; name the user, or pass SYSTEM')
        start = site if site is not None else self.application(
            current_connection())
        user = self._lookup(principal_id, start)
        if user is None:
            raise PrincipalNotFound(self._unknown(principal_id, start))
        return user

    def check_principal(self, principal, principal_id):
        if principal is None:
            raise PrincipalNotFound(
                'getPrincipal(%r) found no user; in Zope work never runs '
                'as nobody' % (principal_id,))

    def begin_security(self, principal):
        # A thread may have a security manager of its own (a zconsole
        # script runs as the system user): it gets it back at the end.
        previous = getSecurityManager()
        if _is_nobody(previous.getUser()):
            previous = None
        newSecurityManager(None, principal)
        # What the publisher does per request: an interaction of the
        # configured policy (AccessControl's in an instance), so that
        # zope.security's checkPermission() asks the security manager.
        if queryInteraction() is None:
            newInteraction()
            interaction = queryInteraction()
        else:  # the caller's, left alone
            interaction = None
        # The unit's fake request is the thread's request (getRequest(),
        # which much Plone code asks), with the user on it.
        request = self.application(current_connection()).REQUEST
        request['AUTHENTICATED_USER'] = principal
        previous_request = getRequest()
        setRequest(request)
        return interaction, previous, previous_request

    def end_security(self, token):
        interaction, previous, previous_request = token
        if previous_request is None:
            clearRequest()
        else:
            setRequest(previous_request)
        if previous is None:
            noSecurityManager()  # nothing keyed by this thread's id stays
        else:
            setSecurityManager(previous)
        if interaction is not None:
            security.end_interaction(None, interaction)

    def transaction_user(self, principal_id):
        """As the publisher writes it (``T.setUser(user_id, path)``, the
        path of the user folder's container without the leading '/'):
        ' admin' for a user of the root folder, 'site bob' for one of
        /site/acl_users; '' for SYSTEM, like Zope's own start-up."""
        if not principal_id or principal_id == SYSTEM:
            return ''
        user = getSecurityManager().getUser()
        folder = None
        if not _is_nobody(user) and user.getId() == principal_id:
            folder = aq_parent(user)
        if folder is None:  # another user named for the note
            site = hooks.getSite()
            found = self._lookup(principal_id, site) if site else None
            folder = aq_parent(found) if found is not None else None
        path = ('/'.join(folder.getPhysicalPath()[1:-1])
                if folder is not None else '')
        return '%s %s' % (path, principal_id)
