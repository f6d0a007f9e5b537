"""The unit-of-work context: capture in the caller, enter in the runner."""
import pytest
import transaction
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError
from zope.component import hooks
from zope.interface.verify import verifyObject
from zope.security.management import queryInteraction

from cipher.background.context import Participation
from cipher.background.context import UnitOfWork
from cipher.background.context import current_connection
from cipher.background.contextmanagers import ZodbConnection
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.demo import Principal
from cipher.background.errors import ConfigurationError
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import SiteNotFound
from cipher.background.errors import ThreadBusy
from cipher.background.interfaces import IUnitOfWork
from cipher.background.retry import RetryPolicy
from helpers import add_site
from helpers import read


def no_sleep(seconds, stop_event=None):
    return False


def test_unit_of_work_provides_its_interface(mapping_db):
    assert verifyObject(IUnitOfWork, UnitOfWork(mapping_db))


def test_run_enters_site_and_principal_and_commits(any_db):
    site_oid = add_site(any_db)
    uow = UnitOfWork(any_db, site_oid, 'editor')
    seen = {}

    def work():
        site = hooks.getSite()
        seen['principals'] = [p.principal.id
                              for p in queryInteraction().participations]
        site['doc'].state = 'PUBLISHED'
        return site._p_oid

    assert uow.run(work, note='publish') == site_oid
    assert seen['principals'] == ['editor']
    assert read(any_db, lambda r: r['site']['doc'].state) == 'PUBLISHED'
    assert hooks.getSite() is None and queryInteraction() is None


def test_capture_takes_site_db_and_principal_from_the_caller(mapping_db):
    site_oid = add_site(mapping_db)
    with ZodbConnection(mapping_db) as conn:
        with ZopeSite(conn.root()['site']):
            with ZopeInteraction(Participation(Principal('admin'))):
                uow = UnitOfWork.capture()
    assert (uow.db, uow.site_oid, uow.principal_id) == (
        mapping_db, site_oid, 'admin')


def test_capture_without_any_database_is_a_clear_error():
    with pytest.raises(ConfigurationError, match='pass db='):
        UnitOfWork.capture()


def test_not_a_database_is_refused():
    with pytest.raises(ConfigurationError, match='expected a ZODB database'):
        UnitOfWork('Data.fs')


def test_a_failed_unit_commits_nothing_and_restores_everything(any_db):
    site_oid = add_site(any_db)
    uow = UnitOfWork(any_db, site_oid, 'editor')
    logged = []

    def work():
        hooks.getSite()['doc'].state = 'HALF'
        raise RuntimeError('broken halfway')

    with pytest.raises(RuntimeError):
        with uow.entered(on_error=lambda exc: logged.append(
                (exc, scope.connection.opened is not None))) as scope:
            uow.attempt(work)
    assert logged and logged[0][1] is True  # the connection was still open
    assert scope.connection.opened is None
    assert read(any_db, lambda r: r['site']['doc'].state) == 'DRAFT'
    assert hooks.getSite() is None and queryInteraction() is None


def test_conflict_at_commit_is_retried_on_a_synced_connection(file_db):
    add_site(file_db)
    conn = file_db.open()
    conn.root()['counter'] = PersistentMapping(n=0)
    transaction.commit()
    conn.close()
    retries = []
    uow = UnitOfWork(file_db, retry_policy=RetryPolicy(sleep=no_sleep))

    def increment():
        root = current_connection().root()
        root['counter']['n'] += 1
        if not retries:
            # Another transaction wins the race on the same object.
            other = file_db.open(transaction.TransactionManager())
            other.root()['counter']['n'] += 10
            other.transaction_manager.commit()
            other.close()

    uow.run(increment,
            on_retry=lambda n, error, delay: retries.append(error))
    assert len(retries) == 1 and isinstance(retries[0], ConflictError)
    assert read(file_db, lambda r: r['counter']['n']) == 11


def test_missing_site_and_non_site_are_clear_errors(mapping_db):
    add_site(mapping_db)
    with pytest.raises(SiteNotFound, match='no object with OID'):
        UnitOfWork(mapping_db, b'\0' * 7 + b'\x99').run(lambda: None)
    root_oid = read(mapping_db, lambda r: r._p_oid)
    with pytest.raises(NotASite, match='is not a site'):
        UnitOfWork(mapping_db, root_oid).run(lambda: None)
    assert hooks.getSite() is None and queryInteraction() is None


def test_unknown_principal_fails_the_unit(mapping_db):
    site_oid = add_site(mapping_db)
    ran = []
    with pytest.raises(PrincipalNotFound, match="principal 'mallory'"):
        UnitOfWork(mapping_db, site_oid, 'mallory').run(
            lambda: ran.append(1))
    assert ran == []


def test_a_failure_on_the_way_in_restores_everything(mapping_db):
    site_oid = add_site(mapping_db)
    scope = UnitOfWork(mapping_db, site_oid, 'mallory').entered(
        on_error=lambda exc: seen.append(
            (type(exc).__name__, scope.connection.opened is not None)))
    seen = []
    with pytest.raises(PrincipalNotFound):
        with scope:
            pass
    assert seen == [('PrincipalNotFound', True)]  # logged while open
    assert scope.connection.opened is None
    assert hooks.getSite() is None and queryInteraction() is None
    assert all(info['opened'] is None
               for info in mapping_db.connectionDebugInfo())


def test_a_named_user_with_no_site_and_no_authentication_is_refused(
        mapping_db):
    ran = []
    with pytest.raises(PrincipalNotFound, match='pass site='):
        UnitOfWork(mapping_db, None, 'anybody').run(lambda: ran.append(1))
    assert ran == []


def test_no_user_and_no_authentication_means_no_participation(mapping_db):
    uow = UnitOfWork(mapping_db, None, None)
    assert uow.run(lambda: queryInteraction().participations) == []


def test_a_unit_refuses_a_thread_with_pending_work_and_keeps_it(
        mapping_db):
    conn = mapping_db.open()
    conn.root()['pending'] = 1  # left uncommitted by the calling code
    with pytest.raises(ThreadBusy, match='commit or abort'):
        UnitOfWork(mapping_db).run(
            lambda: transaction.get().note('the unit'), note='unit')
    transaction.commit()
    conn.close()
    assert read(mapping_db, lambda r: r['pending']) == 1
