"""What counts as a site of background work, in the default host, and
the database identity of stored objects (loading them is the host's:
:mod:`cipher.background.host`)."""
from zope.component.interfaces import ISite

from cipher.background.errors import ConfigurationError


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
