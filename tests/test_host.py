"""The host seam: every unit and job goes through the host it was created
with, for loading the site and the arguments, finding the principal,
setting and clearing security, and writing the transaction's user."""
import pytest
import transaction
from persistent.mapping import PersistentMapping
from zope.component import hooks
from zope.security.management import queryInteraction

from cipher.background import BackgroundWorkerThread
from cipher.background import current_connection
from cipher.background import current_user_id
from cipher.background import jobs
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import SiteNotFound
from cipher.background.host import ZopeSecurityHost
from cipher.background.host import get_host
from cipher.background.host import set_host
from cipher.background.startup import SiteWorkers
from cipher.background.testing import immediate
from helpers import TIMEOUT
from helpers import add_site
from helpers import read


class RecordingHost(ZopeSecurityHost):
    """The default host, noting what the runner asks of it."""

    name = 'recording'

    def __init__(self):
        self.calls = []

    def load(self, connection, oid, hint=None):
        self.calls.append('load')
        return super().load(connection, oid, hint)

    def begin_security(self, principal):
        self.calls.append('begin %s' % getattr(principal, 'id', None))
        return super().begin_security(principal)

    def end_security(self, token):
        self.calls.append('end')
        super().end_security(token)

    def transaction_user(self, principal_id):
        return 'recorded %s' % principal_id


@pytest.fixture
def recording():
    host = RecordingHost()
    previous = set_host(host)
    yield host
    set_host(previous)


class Once(BackgroundWorkerThread):
    fail = False

    def scheduleNextWork(self):
        return not self.stopped and not getattr(self, 'done', False)

    def doWork(self):
        self.done = True
        self.user_seen = current_user_id()
        hooks.getSite().__parent__  # the site is there
        current_connection().root()['touched'] = True
        if self.fail:
            raise ValueError('the unit fails')


def _last_user(db):
    """The user field of the database's last transaction."""
    return list(db.storage.iterator())[-1].user


def test_a_worker_goes_through_its_host(mapping_db, recording):
    oid = add_site(mapping_db)
    worker = Once(mapping_db, oid, 'site', 'editor')
    set_host(None)  # later changes do not reach work created earlier
    worker.start()
    worker.join(TIMEOUT)
    assert worker.user_seen == 'editor'
    assert 'load' in recording.calls
    assert recording.calls[-2:] == ['begin editor', 'end']
    assert _last_user(mapping_db) in ('recorded editor', b'recorded editor')
    assert read(mapping_db, lambda root: root['touched'])


def test_security_is_ended_when_the_unit_fails(mapping_db, recording,
                                               logged):
    oid = add_site(mapping_db)
    worker = Once(mapping_db, oid, 'site', 'editor')
    worker.fail = True
    worker.start()
    worker.join(TIMEOUT)
    assert recording.calls.count('begin editor') == \
        recording.calls.count('end') >= 1
    assert 'ValueError: the unit fails' in logged.getvalue()
    assert read(mapping_db, lambda root: 'touched' not in root)


def _name_of(document):
    return document.__name__, current_user_id(), queryInteraction() is None


def test_a_job_loads_its_arguments_through_its_host(mapping_db, recording):
    add_site(mapping_db)
    conn = mapping_db.open()
    try:
        site = conn.root()['site']
        with immediate():
            job_id = jobs.submit(_name_of, (site['doc'],), site=site,
                                 user='editor')
            transaction.commit()
        status = jobs.wait(job_id, TIMEOUT)
    finally:
        transaction.abort()
        conn.close()
    assert status.result == ('doc', 'editor', False)
    assert status.principal == 'editor'
    assert recording.calls.count('load') == 2  # the site, the document
    assert recording.calls[-1] == 'end'


def test_set_host_refuses_what_is_not_a_host():
    with pytest.raises(ArgumentTypeError) as raised:
        set_host(object())
    assert 'lacks begin_security' in str(raised.value)
    assert isinstance(get_host(), ZopeSecurityHost)


def test_a_missing_site_path_names_what_is_there(mapping_db):
    add_site(mapping_db)
    with pytest.raises(SiteNotFound) as raised:
        SiteWorkers(Once, '/site/nowhere', 'editor')(mapping_db)
    message = str(raised.value)
    assert "no 'nowhere' in /site" in message
    assert "'doc'" in message  # what the site holds


def test_a_path_to_something_else_is_not_a_site(mapping_db):
    conn = mapping_db.open()
    conn.root()['plain'] = PersistentMapping()
    transaction.commit()
    conn.close()
    with pytest.raises(NotASite):
        SiteWorkers(Once, '/plain', 'editor')(mapping_db)


def test_an_unknown_user_never_runs_through_any_host(mapping_db, recording,
                                                     logged):
    oid = add_site(mapping_db)
    worker = Once(mapping_db, oid, 'site', 'ghost')
    worker.runOnce()
    assert not getattr(worker, 'done', False)
    assert 'PrincipalNotFound' in logged.getvalue()
    assert not any(call.startswith('begin') for call in recording.calls)
    assert PrincipalNotFound.__name__ in worker.status.last_error


def test_every_way_in_refuses_what_the_host_does_not_take_as_a_site(
        mapping_db):
    # forSite(), UnitOfWork.capture() and submit() ask the same question
    # of the host, and nothing is recorded when the answer is no.
    from cipher.background import UnitOfWork
    add_site(mapping_db)
    conn = mapping_db.open()
    doc = conn.root()['site']['doc']
    jobs_before = len(jobs.get_job_store())
    try:
        for start in (lambda: BackgroundWorkerThread.forSite(doc, 'editor'),
                      lambda: UnitOfWork.capture(site=doc, user='editor'),
                      lambda: jobs.submit(print, site=doc, user='editor')):
            with pytest.raises(NotASite, match='is not a site'):
                start()
    finally:
        transaction.abort()
        conn.close()
    assert len(jobs.get_job_store()) == jobs_before
