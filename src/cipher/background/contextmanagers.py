"""Four small context managers for Zope and ZODB code that runs outside
a request: an interaction, a connection, a local site and a transaction.

They are the building blocks of the unit-of-work context
(:mod:`cipher.background.context`), and useful on their own in scripts::

    with ZodbConnection(db) as conn:
        with ZopeSite(conn.root()['site']):
            with ZopeTransaction(user='admin', note='nightly clean-up'):
                do_stuff()
"""
from contextlib import contextmanager

import transaction
from zope.component import hooks
from zope.security.management import endInteraction
from zope.security.management import newInteraction


@contextmanager
def ZopeInteraction(*participations):
    """Run the block inside a new security interaction.

    The interaction has the given participations; with none it is the
    unchecked interaction scripts use.  Raises
    ``zope.security.management.ExistingInteraction`` when the thread
    already has an interaction.  The interaction is ended on the way out,
    whatever happens in the block.
    """
    newInteraction(*participations)
    try:
        yield
    finally:
        endInteraction()


@contextmanager
def ZodbConnection(db):
    """Open a connection from ``db`` (``db.open()``), yield it, close it.

    The connection is closed whatever happens in the block.
    """
    conn = db.open()
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def ZopeSite(site):
    """Make ``site`` the current local site for the block.

    Nestable: the site that was current before is restored on the way out.
    Yields the site.  Makes sure component lookups honour the site
    (``zope.component.hooks.setHooks()``, which Zope calls at start-up but
    a script or a bare ZODB application may not have).
    """
    hooks.setHooks()
    old_site = hooks.getSite()
    hooks.setSite(site)
    try:
        yield site
    finally:
        hooks.setSite(old_site)


@contextmanager
def ZopeTransaction(user=None, note=None, path='/'):
    """Run the block in a fresh transaction; commit on success, abort on
    an exception (which propagates).

    ``user`` and ``path`` become the transaction's user (as Zope records
    it: ``"path user"``), ``note`` its note.  Yields the transaction.

    Beware: "fresh" means ``transaction.begin()``, which aborts whatever
    the thread's current transaction had not committed yet.
    """
    txn = transaction.begin()
    try:
        if user:
            txn.setUser(user, path)
        if note:
            txn.note(note)
        yield txn
        # Commit through the manager, not txn: the block may have committed
        # or aborted txn itself and begun another transaction.
        transaction.commit()
    except BaseException:
        transaction.abort()
        raise
