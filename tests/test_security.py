"""Work never runs with more rights than the person who asked: the site is
always found, a missing user is refused where security is checked, running
unchecked is a named choice, and a caller of several principals is never
reduced to one of them."""
import pytest
import transaction
from zope.component import hooks
from zope.security.management import endInteraction
from zope.security.management import queryInteraction
from zope.security.management import restoreInteraction
from zope.security.management import system_user
from zope.site.folder import Folder
from zope.site.site import LocalSiteManager

from cipher.background import SYSTEM
from cipher.background import jobs
from cipher.background.context import Participation
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.demo import Principal
from cipher.background.demo import make_site
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import PrincipalRequired
from cipher.background.startup import SiteWorkers
from cipher.background.testing import immediate
from cipher.background.thread import BackgroundWorkerThread
from helpers import add_site
from helpers import read


def _who():
    """What a job sees: the site's name and the interaction's principals."""
    site = hooks.getSite()
    return (site.__name__ if site is not None else None,
            [p.principal.id for p in queryInteraction().participations])


class OneUnit(BackgroundWorkerThread):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def scheduleNextWork(self):
        return not self.seen

    def doWork(self):
        self.seen.append(_who())


# -- 1: the site is always found --

def test_a_site_made_in_the_same_request_is_resolved_after_commit(
        mapping_db):
    conn = mapping_db.open()
    try:
        with immediate():
            site = make_site(conn.root(), 'fresh', users=['editor'])
            assert site._p_oid is None  # not stored yet
            job_id = jobs.submit(_who, site=site, user='editor')
            transaction.commit()
        status = jobs.get_status(job_id)
        assert status.state == 'succeeded', status.error
        assert status.result == ('fresh', ['editor'])
    finally:
        transaction.abort()
        conn.close()


def test_a_site_that_never_reaches_the_database_fails_the_job(mapping_db):
    conn = mapping_db.open()
    try:
        with immediate():
            site = Folder()
            site.setSiteManager(LocalSiteManager(site))
            conn.root()['stored'] = Folder()  # the commit writes something
            job_id = jobs.submit(_who, site=site, db=mapping_db,
                                 user='editor')
            transaction.commit()
        status = jobs.get_status(job_id)
        assert status.state == 'failed'
        assert 'ObjectNotStored' in status.error
    finally:
        transaction.abort()
        conn.close()


def test_a_site_that_is_not_a_site_object_is_refused_at_the_call(mapping_db):
    before = len(jobs.get_job_store())
    with pytest.raises(NotASite, match='not a site'):
        jobs.submit(_who, site='/site', db=mapping_db, user='editor')
    transaction.commit()
    assert len(jobs.get_job_store()) == before  # nothing recorded


# -- 2: no user where security is checked: refused; SYSTEM is explicit --

def test_forSite_without_a_user_on_a_checked_site_is_refused(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        with pytest.raises(PrincipalRequired) as raised:
            OneUnit.forSite(conn.root()['site'])
        assert 'cipher.background.SYSTEM' in str(raised.value)
        assert "user_name='editor'" in str(raised.value)
    finally:
        conn.close()


def test_perform_outside_a_request_on_a_checked_site_is_refused(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        with ZopeSite(conn.root()['site']):
            with pytest.raises(PrincipalRequired):
                jobs.perform(_who)
        transaction.commit()
    finally:
        transaction.abort()
        conn.close()


def test_a_worker_made_without_a_user_refuses_in_the_runner_too(mapping_db):
    worker = OneUnit(mapping_db, add_site(mapping_db), 'site', None)
    worker.runOnce()
    assert worker.seen == []
    assert worker.status.units_failed == 1
    assert 'PrincipalRequired' in worker.status.last_error


def test_site_workers_without_a_user_on_a_checked_site_are_refused(
        mapping_db):
    add_site(mapping_db)
    with pytest.raises(PrincipalRequired):
        SiteWorkers(OneUnit, '/site')(mapping_db)


def test_system_runs_unchecked_on_purpose_and_says_so(mapping_db):
    site_oid = add_site(mapping_db)
    worker = OneUnit(mapping_db, site_oid, 'site', SYSTEM)
    worker.runOnce()
    assert worker.seen == [('site', [system_user.id])]
    conn = mapping_db.open()
    try:
        with immediate():
            job_id = jobs.submit(_who, site=conn.root()['site'], user=SYSTEM)
            transaction.commit()
        assert jobs.get_status(job_id).result == (
            'site', [system_user.id])
    finally:
        transaction.abort()
        conn.close()


def test_without_any_authentication_work_runs_as_the_original_did(
        mapping_db):
    """No IAuthentication reachable: nobody to check, so an interaction
    with no participation, and the name goes into the history."""
    conn = mapping_db.open()
    try:
        site = conn.root()['plain'] = Folder()
        site.setSiteManager(LocalSiteManager(site))
        transaction.commit()
        worker = OneUnit.forSite(site, 'someuser')
        worker.runOnce()
        assert [principals for _, principals in worker.seen] == [[]]
        assert worker.status.units_done == 1
    finally:
        transaction.abort()
        conn.close()


# -- 3: several participations are never reduced to one --

def test_an_interaction_of_several_principals_is_refused(mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        site = conn.root()['site']
        both = [Participation(Principal('editor')),
                Participation(Principal('admin'))]
        with ZopeSite(site), ZopeInteraction(*both):
            with pytest.raises(ConfigurationError, match='several'):
                OneUnit.forSite(site)
            with pytest.raises(ConfigurationError, match='several'):
                jobs.perform(_who)
            # Naming the user is the way out.
            worker = OneUnit.forSite(site, 'editor')
        transaction.commit()
        worker.runOnce()
        assert worker.seen == [('site', ['editor'])]
    finally:
        transaction.abort()
        conn.close()


def test_one_principal_in_several_participations_is_that_principal(
        mapping_db):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        site = conn.root()['site']
        same = [Participation(Principal('editor')),
                Participation(Principal('editor'))]
        with ZopeSite(site), ZopeInteraction(*same):
            worker = OneUnit.forSite(site)
        assert worker.user_name == 'editor'
    finally:
        conn.close()
    assert read(mapping_db, lambda r: r['site'].__name__) == 'site'


# -- found by the review of this change --

def test_a_job_of_a_named_user_without_a_site_is_refused_not_unchecked(
        mapping_db):
    """The caller's interaction names 'editor' but no site is set: nothing
    says where that user lives, so the job is refused at the call."""
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        doc = conn.root()['site']['doc']
        with ZopeInteraction(Participation(Principal('editor'))):
            with pytest.raises(PrincipalNotFound, match='pass site='):
                jobs.perform(_who, doc)
        transaction.commit()
    finally:
        transaction.abort()
        conn.close()


class OverrideAnswersNone(OneUnit):
    def getPrincipal(self, principal_id):
        return None  # a broken override


def test_a_getPrincipal_override_answering_none_never_runs_unchecked(
        mapping_db):
    worker = OverrideAnswersNone(mapping_db, add_site(mapping_db), 'site',
                                 'mallory')
    worker.runOnce()
    assert worker.seen == []
    assert 'PrincipalNotFound' in worker.status.last_error


class EndsItsInteraction(OneUnit):
    def doWork(self):
        super().doWork()
        endInteraction()  # user code that ends the unit's interaction


def test_a_unit_that_ends_its_own_interaction_leaves_no_principal(
        mapping_db):
    worker = EndsItsInteraction(mapping_db, add_site(mapping_db), 'site',
                                'editor')
    worker.runOnce()
    restoreInteraction()  # nothing of the unit may come back
    assert queryInteraction() is None


def test_an_empty_user_id_is_refused(mapping_db):
    with pytest.raises(ConfigurationError, match="not ''"):
        OneUnit(mapping_db, add_site(mapping_db), 'site', '')
