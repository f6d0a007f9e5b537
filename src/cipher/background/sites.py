"""Finding the site of background work: what counts as a site, and
loading it again by OID in the runner's connection."""
from ZODB.POSException import POSKeyError
from zope.component.interfaces import ISite

from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import SiteNotFound


def database_identity(obj, what='object'):
    """Return ``(db, oid)`` of a stored persistent object, or raise
    ConfigurationError saying why it has none."""
    jar = getattr(obj, '_p_jar', None)
    oid = getattr(obj, '_p_oid', None)
    if jar is None or oid is None:
        raise ConfigurationError(
            'the %s %r is not stored in a ZODB database (it has no _p_jar '
            'or _p_oid); add it to the database and commit before handing '
            'it to background work' % (what, obj))
    return jar.db(), oid


def is_site(obj):
    """True for a zope.component site, and for any object with a
    ``getSiteManager()`` method (what cipher.background 2.0 accepted)."""
    return ISite.providedBy(obj) or callable(
        getattr(obj, 'getSiteManager', None))


def not_a_site_message(obj):
    return ('%r is not a site (it has no local site manager); pass the '
            'site itself, or make it a site first (zope.site: '
            'setSiteManager(LocalSiteManager(obj)); Zope 2/5: '
            'Products.Five.component.enableSite or "Make site" in the ZMI)'
            % (obj,))


def load_site(connection, site_oid):
    """Load the site ``site_oid`` in ``connection``; raise SiteNotFound or
    NotASite when it is not there or not a site."""
    try:
        site = connection.get(site_oid)
    except (POSKeyError, KeyError):
        raise SiteNotFound(
            'no object with OID %r in the database: the site was removed or '
            'never committed; start background work only after the '
            "transaction that adds the site commits (use "
            'startAfterCommit())' % (site_oid,)) from None
    if not is_site(site):
        raise NotASite(not_a_site_message(site))
    return site
