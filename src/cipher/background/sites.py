"""What counts as a site of background work, in the default host, and
the database identity of stored objects (loading them is the host's:
:mod:`cipher.background.host`)."""
from persistent import Persistent
from zope.component.interfaces import ISite

from cipher.background.errors import ConfigurationError


def database_identity(obj, what='object', transaction_manager=None):
    """Return ``(db, oid)`` of a stored persistent object, or raise
    ConfigurationError saying why it has none.

    With ``transaction_manager`` (the caller's), an object added in the
    caller's transaction and not stored yet (a site made in the same
    request) gets its OID from a savepoint of that transaction: the OID is
    the one the commit stores it under.
    """
    jar = getattr(obj, '_p_jar', None)
    oid = getattr(obj, '_p_oid', None)
    if (oid is None and transaction_manager is not None
            and isinstance(obj, Persistent)):
        # Optimistic: a data manager without savepoints only makes this
        # savepoint impossible to roll back, which nobody will ask for.
        transaction_manager.savepoint(optimistic=True)
        jar, oid = obj._p_jar, obj._p_oid
    if jar is None or oid is None:
        raise ConfigurationError(
            'the %s %r is not stored in a ZODB database (it has no _p_jar '
            'or _p_oid); add it to a stored object (or to the database '
            'root) before handing it to background work' % (what, obj))
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
