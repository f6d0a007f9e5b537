"""A real Zope instance for the Zope host's tests: zope.conf and
site.zcml in a temporary instance home, a FileStorage, started the way
runwsgi starts it (Zope2.Startup.run.make_wsgi_app), requests through
the WSGI publisher with WebTest.

Zope starts once per process and changes process-wide state (its
security policy, its components), so these tests run in a process of
their own: tests/test_zope.py starts it.
"""
import pytest
import transaction
import webtest
from AccessControl.SecurityManagement import noSecurityManager

from cipher.background import stop_all
from helpers import TIMEOUT
from helpers import thread_leftovers

SERVER_URL = 'https://zope.example.com'

ZOPE_CONF = """\
%define INSTANCE {home}
instancehome $INSTANCE
<zodb_db main>
   <filestorage>
     path $INSTANCE/var/Data.fs
   </filestorage>
   mount-point /
</zodb_db>
<product-config cipher.background>
  server-url {url}
</product-config>
"""

# An instance's etc/site.zcml (as Zope's skeleton has it), the library
# included the way a Zope developer includes it, and the test views.
SITE_ZCML = """\
<configure xmlns="http://namespaces.zope.org/zope"
           xmlns:five="http://namespaces.zope.org/five"
           xmlns:browser="http://namespaces.zope.org/browser">
  <include package="Zope2.App" />
  <five:loadProducts file="meta.zcml"/>
  <five:loadProducts />
  <include package="cipher.background" />
  <browser:page for="OFS.interfaces.IObjectManager" name="start-job"
      class="views.StartJob" permission="zope2.View" />
  <browser:page for="OFS.interfaces.IObjectManager" name="enqueue-job"
      class="views.EnqueueJob" permission="zope2.View" />
  <browser:page for="OFS.interfaces.IObjectManager" name="start-worker"
      class="views.StartWorker" permission="zope2.View" />
  <browser:page for="OFS.interfaces.IObjectManager" name="make-site"
      class="views.MakeSiteAndWorker" permission="zope2.View" />
  <five:loadProductsOverrides />
</configure>
"""


@pytest.fixture(scope='session')
def zope(tmp_path_factory):
    """The instance: ``app`` (its WSGI application) and ``db``; users
    admin (Manager) and bob (no roles) in /acl_users, the site /bgsite
    (made a site as the ZMI does); eve (no roles) too; /tenant, a site
    whose own user folder knows another bob and tm (its Manager) holding the folder 'docs', and /passite
    whose PluggableAuthService knows carol-id."""
    home = tmp_path_factory.mktemp('instance')
    (home / 'etc').mkdir()
    (home / 'var').mkdir()
    conf = home / 'etc' / 'zope.conf'
    conf.write_text(ZOPE_CONF.format(home=home, url=SERVER_URL))
    (home / 'etc' / 'site.zcml').write_text(SITE_ZCML)
    from Zope2.Startup.run import make_wsgi_app
    wsgi = make_wsgi_app({}, str(conf))
    import Zope2
    from five.localsitemanager import make_objectmanager_site
    from OFS.Folder import manage_addFolder
    from Products.PluggableAuthService.interfaces.plugins import (
        IUserEnumerationPlugin)
    from Products.PluggableAuthService.PluggableAuthService import (
        addPluggableAuthService)
    from Products.PluggableAuthService.plugins.ZODBUserManager import (
        addZODBUserManager)
    app = Zope2.app()
    try:
        app.acl_users._doAddUser('admin', 'secret', ['Manager'], [])
        app.acl_users._doAddUser('bob', 'secret', [], [])
        app.acl_users._doAddUser('eve', 'secret', [], [])
        manage_addFolder(app, 'bgsite')
        make_objectmanager_site(app.bgsite)
        manage_addFolder(app.bgsite, 'docs')
        manage_addFolder(app, 'passite')
        make_objectmanager_site(app.passite)
        addPluggableAuthService(app.passite)
        pas = app.passite.acl_users
        addZODBUserManager(pas, 'users')
        pas.plugins.activatePlugin(IUserEnumerationPlugin, 'users')
        pas.users.addUser('carol-id', 'carol@example.com', 'secret')
        # A site with users of its own: another bob, and its own Manager.
        from OFS.userfolder import manage_addUserFolder
        manage_addFolder(app, 'tenant')
        make_objectmanager_site(app.tenant)
        manage_addUserFolder(app.tenant)
        app.tenant.acl_users._doAddUser('bob', 'secret', [], [])
        app.tenant.acl_users._doAddUser('tm', 'secret', ['Manager'], [])
        transaction.commit()
    finally:
        transaction.abort()
        app._p_jar.close()
    return dict(app=wsgi, db=Zope2.DB, home=home)


@pytest.fixture
def browser(zope):
    return webtest.TestApp(zope['app'])


@pytest.fixture(autouse=True)
def clean_thread_state():
    """Fail a test that leaves a site, an interaction, a security manager
    or a live worker (replaces the suite's check: the host here is
    Zope's on purpose)."""
    yield
    leftovers = thread_leftovers()
    noSecurityManager()  # the test's own calls may have made one
    still_alive = stop_all(timeout=TIMEOUT)
    assert not still_alive, 'workers did not stop: %r' % still_alive
    assert not leftovers, 'the test left %s behind' % ' and '.join(leftovers)
