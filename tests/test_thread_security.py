"""The user who started the work is restored: checked with their
permissions, never silently with more."""
import transaction
from persistent.mapping import PersistentMapping
from zope.component import hooks
from zope.security.checker import Checker
from zope.security.checker import ProxyFactory
from zope.security.management import queryInteraction
from zope.site.folder import Folder
from zope.site.site import LocalSiteManager

from cipher.background.context import Participation
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.demo import Principal
from cipher.background.demo import Publisher
from cipher.background.errors import PrincipalNotFound
from cipher.background.testing import setUpLogging
from cipher.background.testing import tearDownLogging
from cipher.background.thread import BackgroundWorkerThread
from cipher.background.thread import log as thread_log
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class Publishing(BackgroundWorkerThread):
    """Publishes 'doc' through a security proxy, as a view would."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcome = []
        self.scheduled = 0

    def scheduleNextWork(self):
        # One unit.  (Not counted in doCleanup: a unit whose principal is
        # unknown never runs doWork or doCleanup, only fails.)
        self.scheduled += 1
        return self.scheduled == 1

    def doWork(self):
        site = hooks.getSite()
        self.outcome.append([p.principal.id
                             for p in queryInteraction().participations])
        publisher = ProxyFactory(Publisher(),
                                 Checker({'publish': 'demo.Publish'}))
        publisher.publish(site['doc'])


def test_admin_may_do_what_an_editor_may_not(mapping_db, security_policy):
    site_oid = add_site(mapping_db)
    log = setUpLogging(thread_log)
    try:
        editor = Publishing(mapping_db, site_oid, 'site', 'editor')
        editor.runOnce()
        assert editor.outcome == [['editor']]
        assert editor.status.units_failed == 1
        assert 'Unauthorized' in log.getvalue()
        assert read(mapping_db, lambda r: r['site']['doc'].state) == 'DRAFT'

        admin = Publishing(mapping_db, site_oid, 'site', 'admin')
        admin.runOnce()
        assert admin.status.units_done == 1
        assert read(mapping_db, lambda r: r['site']['doc'].state) == (
            'PUBLISHED')
    finally:
        tearDownLogging(thread_log)


def test_unknown_principal_fails_the_unit_and_never_runs_unchecked(
        mapping_db, security_policy):
    log = setUpLogging(thread_log)
    try:
        worker = Publishing(mapping_db, add_site(mapping_db), 'site',
                            'mallory')
        worker.start()
        worker.join(TIMEOUT)
        assert worker.outcome == []  # doWork never ran
        assert worker.status.units_failed == 1
        assert "principal 'mallory' is unknown" in log.getvalue()
        assert 'PrincipalNotFound' in worker.status.last_error
        assert read(mapping_db, lambda r: r['site']['doc'].state) == 'DRAFT'
    finally:
        tearDownLogging(thread_log)


def test_without_security_machinery_the_interaction_is_empty(mapping_db):
    conn = mapping_db.open()
    site = conn.root()['bare'] = Folder()
    site.setSiteManager(LocalSiteManager(site))
    site['doc'] = PersistentMapping()
    transaction.commit()
    seen = []

    class Looking(BackgroundWorkerThread):
        def scheduleNextWork(self):
            return not seen

        def doWork(self):
            seen.append(list(queryInteraction().participations))

    Looking.forSite(site, 'anybody').runOnce()
    conn.close()
    assert seen == [[]]


def test_forSite_takes_the_principal_of_the_current_interaction(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    with ZopeInteraction(Participation(Principal('admin'))):
        worker = Publishing.forSite(conn.root()['site'])
    conn.close()
    assert worker.user_name == 'admin'
    worker.runOnce()
    assert worker.outcome == [['admin']]


def test_getPrincipal_is_the_override_point_for_stored_users(mapping_db):
    site_oid = add_site(mapping_db)
    conn = mapping_db.open()
    conn.root()['users'] = PersistentMapping(bob=PersistentMapping(
        title='Bob'))
    transaction.commit()
    conn.close()

    class StoredUsers(Publishing):
        def doWork(self):
            self.outcome.append([p.principal.title
                                 for p in queryInteraction().participations])

        def getPrincipal(self, principal_id):
            users = hooks.getSite()._p_jar.root()['users']
            if principal_id not in users:
                raise PrincipalNotFound('no stored user %r' % principal_id)
            return Principal(principal_id, users[principal_id]['title'])

    worker = StoredUsers(mapping_db, site_oid, 'site', 'bob')
    worker.runOnce()
    assert worker.outcome == [['Bob']]
    assert worker.status.units_done == 1
