"""The host seam: who and where background work comes from, per host.

A host (see :class:`~cipher.background.interfaces.IHost`) answers, in the
caller, who the user is, which site and which transaction manager the
work belongs to; and, in the runner, loads the site and the arguments the
way user code sees objects, finds the principal, and sets and clears the
host's security around each unit and each job.

:class:`ZopeSecurityHost`, the default, is zope.component sites and
zope.security with the site's IAuthentication utility (the rules are in
:mod:`cipher.background.security`).  Zope (``cipher.background.zope``)
and Pyramid (``cipher.background.pyramid``) plug their own hosts in with
:func:`set_host`; the core never imports them.

New work takes the host that is current when it is created (a worker at
construction, a job at submission) and keeps it.
"""
import threading

import transaction
from ZODB.POSException import POSKeyError
from zope.component import hooks
from zope.interface import implementer

from cipher.background import security
from cipher.background import sites
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import SiteNotFound
from cipher.background.interfaces import IHost

_REQUIRED = [name for name in IHost.names() if name != 'name']


@implementer(IHost)
class ZopeSecurityHost:
    """zope.component local sites and zope.security, with principals
    looked up through the site's IAuthentication utility."""

    name = 'zope.security'

    def __repr__(self):
        return '<%s>' % type(self).__name__

    # -- the caller's side --

    def current_user(self):
        return security.current_principal_id()

    def current_site(self):
        return hooks.getSite()

    def transaction_manager(self):
        return None

    def check_user(self, user, site):
        security.check_user_for_site(user, site)

    def is_site(self, obj):
        return sites.is_site(obj)

    def not_a_site_message(self, obj):
        return sites.not_a_site_message(obj)

    def locate(self, obj):
        return None  # the OID is enough

    # -- the runner's side --

    def load(self, connection, oid, hint=None):
        return connection.get(oid)

    def find_site(self, connection, path):
        return traverse(self, connection.root(), path)

    def find_principal(self, principal_id, site):
        # The site, a zope.component one, is set: lookups go through it.
        return security.lookup_principal(principal_id)

    def check_principal(self, principal, principal_id):
        security.check_principal_found(principal, principal_id)

    def begin_security(self, principal):
        participation = security.begin_interaction(principal)
        return participation, security.queryInteraction()

    def end_security(self, token):
        security.end_interaction(*token)

    def transaction_user(self, principal_id):
        # As Transaction.setUser(principal_id, '/') writes it.
        return '/ %s' % principal_id if principal_id else ''


def traverse(host, start, path):
    """The site at ``path`` ('/a/b') from ``start``, by item access;
    SiteNotFound naming the part that is missing and what was there,
    NotASite when the object found is not a site to ``host``."""
    if not isinstance(path, str):
        raise ArgumentTypeError('a site path must be a str such as '
                                "'/site', not %r" % (path,))
    obj, walked = start, ''
    for name in [part for part in path.split('/') if part]:
        try:
            obj = obj[name]
        except (KeyError, TypeError, AttributeError, POSKeyError):
            raise SiteNotFound(
                'no %r in %s (%s): the site path %r does not exist; '
                'create the site first, or pass its path from the root'
                % (name, walked or 'the root', _contents(obj), path)
            ) from None
        walked += '/' + name
    if not host.is_site(obj):
        raise NotASite(host.not_a_site_message(obj))
    return obj


def _contents(container, most=10):
    """What ``container`` holds, for a message: a few of its names."""
    try:
        names = sorted(map(str, container.keys()))
    except Exception:
        return 'a %s, not a container' % type(container).__name__
    if not names:
        return 'it is empty'
    shown = ', '.join(map(repr, names[:most]))
    more = len(names) - most
    return 'it holds %s%s' % (shown, ' and %d more' % more if more > 0
                              else '')


DEFAULT_HOST = ZopeSecurityHost()
_lock = threading.Lock()
_current = [DEFAULT_HOST]


def get_host():
    """The host new background work is created with."""
    return _current[0]


def set_host(host):
    """Create new background work with ``host`` (an IHost; None for the
    default) and return the previous one.  Work created earlier keeps its
    host."""
    if host is None:
        host = DEFAULT_HOST
    check_host(host)
    with _lock:
        previous, _current[0] = _current[0], host
    return previous


def check_host(host):
    """ArgumentTypeError unless ``host`` has every method of IHost."""
    missing = [name for name in _REQUIRED
               if not callable(getattr(host, name, None))]
    if missing:
        raise ArgumentTypeError(
            'expected an IHost (such as cipher.background.host.'
            'ZopeSecurityHost()), not %r: it lacks %s' % (
                host, ', '.join(sorted(missing))))


def caller_site(host, site, db=None):
    """In the caller of new background work: ``(db, oid, hint)`` of
    ``site`` (``(db, None, None)`` when it is None), ``hint`` being what
    the host's ``locate()`` says of it.

    NotASite when the host does not take it as a site; ConfigurationError
    when it is not stored, or ``db`` names another database.  A site
    added in the caller's transaction gets its OID from a savepoint of the
    host's (else the thread's) transaction manager.
    """
    if site is None:
        return db, None, None
    site_db, oid = sites.database_identity(
        site, 'site', host.transaction_manager() or transaction.manager)
    if not host.is_site(site):
        raise NotASite(host.not_a_site_message(site))
    if db is not None and db is not site_db:
        raise ConfigurationError(
            'db= and site= name different databases; pass one')
    return site_db, oid, host.locate(site)


def load_site(connection, oid, host=None, hint=None):
    """Load the site ``oid`` through ``host`` (default: the current host),
    with the ``hint`` its ``locate()`` gave; SiteNotFound or NotASite when
    it is not there or not a site."""
    host = host or get_host()
    try:
        site = host.load(connection, oid, hint)
    except (POSKeyError, KeyError):
        raise SiteNotFound(
            'no object with OID %r in the database: the site was removed or '
            'never committed; start background work only after the '
            "transaction that adds the site commits (use "
            'startAfterCommit())' % (oid,)) from None
    if not host.is_site(site):
        raise NotASite(host.not_a_site_message(site))
    return site
