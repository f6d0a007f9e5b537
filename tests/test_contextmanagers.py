"""The four context managers of the original API, on a real database."""
import pytest
import transaction
from persistent.mapping import PersistentMapping
from zope.component import hooks
from zope.security.management import ExistingInteraction
from zope.security.management import queryInteraction

from cipher.background.context import Participation
from cipher.background.contextmanagers import ZodbConnection
from cipher.background.contextmanagers import ZopeInteraction
from cipher.background.contextmanagers import ZopeSite
from cipher.background.contextmanagers import ZopeTransaction
from cipher.background.demo import Principal
from helpers import add_site
from helpers import read


def test_interaction_has_the_participations_and_ends():
    with ZopeInteraction(Participation(Principal('editor'))):
        interaction = queryInteraction()
        assert [p.principal.id for p in interaction.participations] == [
            'editor']
    assert queryInteraction() is None


def test_interaction_ends_on_error_and_refuses_nesting():
    with pytest.raises(ZeroDivisionError):
        with ZopeInteraction():
            1 / 0
    assert queryInteraction() is None
    with ZopeInteraction():
        with pytest.raises(ExistingInteraction):
            with ZopeInteraction():
                pass
    assert queryInteraction() is None


def test_connection_is_closed_after_the_block(mapping_db):
    with ZodbConnection(mapping_db) as conn:
        assert conn.opened
        root = conn.root()
    assert conn.opened is None
    with pytest.raises(KeyError):
        with ZodbConnection(mapping_db) as conn:
            root = conn.root()
            root['missing']
    assert conn.opened is None


def test_site_is_set_nested_and_restored(mapping_db):
    add_site(mapping_db, name='one')
    add_site(mapping_db, name='two')
    with ZodbConnection(mapping_db) as conn:
        one, two = conn.root()['one'], conn.root()['two']
        with ZopeSite(one) as got:
            assert got is one and hooks.getSite() is one
            with ZopeSite(two):
                assert hooks.getSite() is two
            assert hooks.getSite() is one
        assert hooks.getSite() is None


def test_site_makes_local_utilities_resolve(mapping_db):
    from zope.component import queryUtility
    from cipher.background.demo import IPublisher
    add_site(mapping_db)
    hooks.resetHooks()  # as in a bare script that never called setHooks
    with ZodbConnection(mapping_db) as conn:
        with ZopeSite(conn.root()['site']):
            assert queryUtility(IPublisher) is not None
    assert queryUtility(IPublisher) is None


def test_transaction_commits_with_user_and_note(file_db):
    with ZodbConnection(file_db) as conn:
        with ZopeTransaction(user='editor', note='a note') as txn:
            conn.root()['x'] = PersistentMapping(a=1)
            assert txn is transaction.get()
    assert read(file_db, lambda root: root['x']['a']) == 1
    last = file_db.undoLog(0, 1)[0]
    assert last['user_name'] == b'/ editor' or last['user_name'] == '/ editor'
    assert last['description'] in (b'a note', 'a note')


def test_transaction_aborts_on_error(mapping_db):
    with ZodbConnection(mapping_db) as conn:
        with pytest.raises(RuntimeError):
            with ZopeTransaction(note='fails'):
                conn.root()['x'] = 1
                raise RuntimeError('boom')
    assert read(mapping_db, lambda root: 'x' in root) is False


def test_transaction_begins_fresh_discarding_pending_changes(mapping_db):
    with ZodbConnection(mapping_db) as conn:
        conn.root()['pending'] = 1
        with ZopeTransaction():
            conn.root()['fresh'] = 1
    assert read(mapping_db, lambda root: sorted(root)) == ['fresh']
