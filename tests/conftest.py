"""Fixtures: real databases, a real ZEO server, and a check that every test
leaves its thread clean and its workers stopped."""
import os
import sys

# The Pythons the tests start (sys.executable: the CLI, a ZEO server,
# crash scripts) see the packages this one sees.  Under a buildout's
# bin/test the interpreter alone finds none of the eggs.
os.environ['PYTHONPATH'] = os.pathsep.join(
    [os.path.abspath(entry) for entry in sys.path if entry]
    + [entry for entry in [os.environ.get('PYTHONPATH')] if entry])

import pytest
import transaction
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from zope.security.management import setSecurityPolicy
from zope.securitypolicy.principalpermission import (
    principalPermissionManager)
from zope.securitypolicy.zopepolicy import ZopeSecurityPolicy

from cipher.background.host import DEFAULT_HOST
from cipher.background.host import get_host
from cipher.background.host import set_host
from cipher.background.testing import setUpLogging
from cipher.background.testing import tearDownLogging
from cipher.background.thread import log as thread_log
from cipher.background.thread import stop_all
from helpers import TIMEOUT
from helpers import ZEOServer
from helpers import thread_leftovers
import prebuild

# The Zope host's tests start a Zope instance, which changes the whole
# process: test_zope.py runs them in a process of their own.
ZOPE_TESTS = 'CIPHER_BACKGROUND_ZOPE_TESTS'
collect_ignore = [] if os.environ.get(ZOPE_TESTS) else ['zope_host']


# Tests whose set-up takes a minute or more of pip: their modules, the
# name and function of the set-up (see prebuild.py).
_PREBUILT = {'test_buildout.py': ('buildout', 'build'),
             'test_packaging.py': ('packaging', 'build_and_install')}


@pytest.hookimpl(trylast=True)  # after -k and -m chose the tests
def pytest_collection_modifyitems(session, config, items):
    """The tests of _PREBUILT go last, their set-ups started now in a
    thread (see prebuild.py): the rest of the suite runs meanwhile."""
    last = [item for item in items if item.path.name in _PREBUILT]
    if not last or config.option.collectonly:
        return
    items[:] = [item for item in items if item not in last] + last
    for item in last:
        name, setup = _PREBUILT[item.path.name]
        prebuild.start(name, getattr(item.module, setup))


def pytest_sessionfinish(session):
    prebuild.discard_all()


@pytest.fixture(autouse=True)
def clean_thread_state():
    """Fail a test that leaves a site, an interaction, a host or a live
    worker."""
    yield
    leftovers = thread_leftovers()
    if get_host() is not DEFAULT_HOST:
        leftovers.append('a host other than the default')
        set_host(None)
    still_alive = stop_all(timeout=TIMEOUT)
    assert not still_alive, 'workers did not stop: %r' % still_alive
    assert not leftovers, 'the test left %s behind' % ' and '.join(leftovers)


@pytest.fixture
def logged():
    """What the worker threads log, as a StringIO."""
    buf = setUpLogging(thread_log)
    yield buf
    tearDownLogging(thread_log)


@pytest.fixture
def mapping_db():
    db = DB(MappingStorage())
    yield db
    db.close()


@pytest.fixture
def file_db(tmp_path):
    db = DB(FileStorage(str(tmp_path / 'Data.fs')))
    yield db
    db.close()


@pytest.fixture(params=['mapping', 'file'])
def any_db(request, tmp_path):
    """Each test using it runs on MappingStorage and on FileStorage."""
    if request.param == 'mapping':
        db = DB(MappingStorage())
    else:
        db = DB(FileStorage(str(tmp_path / 'Data.fs')))
    yield db
    db.close()


@pytest.fixture
def team_site(file_db):
    """A demo site in ``file_db`` whose users are bob and ann, in a
    connection of the test's thread."""
    from cipher.background.demo import make_site
    conn = file_db.open()
    site = make_site(conn.root(), 'site', users=('bob', 'ann'))
    transaction.commit()
    yield site
    transaction.abort()
    conn.close()


@pytest.fixture
def zeo_server(tmp_path):
    server = ZEOServer(tmp_path / 'zeo.fs')
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zeo_db(zeo_server):
    db = zeo_server.db()
    yield db
    db.close()


@pytest.fixture(autouse=True, scope='session')
def shutdown_default_scheduler():
    """The jobs' default pool is shared by the tests; end it at the end."""
    yield
    from cipher.background.jobs import set_scheduler
    scheduler = set_scheduler(None)
    if scheduler is not None:
        scheduler.shutdown(wait=True)


@pytest.fixture
def security_policy():
    """zope.securitypolicy in force; 'admin' may publish, nobody else."""
    old = setSecurityPolicy(ZopeSecurityPolicy)
    principalPermissionManager.grantPermissionToPrincipal(
        'demo.Publish', 'admin', check=False)
    yield
    principalPermissionManager._clear()
    setSecurityPolicy(old)
