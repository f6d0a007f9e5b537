"""The Zope host in a real Zope instance: requests through the WSGI
publisher start jobs and workers, which run as the request's user, see
their objects acquisition-wrapped, write the transaction user as Zope
does, leave nothing behind in their thread, and stop before the
database closes."""

from _thread import get_ident

import pytest
import transaction
import Zope2
from AccessControl.SecurityManagement import _managers
from ZODB import DB
from ZODB.FileStorage import FileStorage
from zope.event import notify
from zope.processlifetime import DatabaseOpenedWithRoot

from cipher.background import SYSTEM
from cipher.background import QueueRunner
from cipher.background import UnitOfWork
from cipher.background import jobs
from cipher.background import zope as zope_host
from cipher.background import zopeinstance as instance
from cipher.background.errors import NotASite
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import PrincipalRequired
from cipher.background.errors import SiteNotFound
from cipher.background.host import get_host
from cipher.background.scheduler import BackgroundScheduler
from cipher.background.startup import SiteWorkers
from conftest import SERVER_URL
from helpers import TIMEOUT
from helpers import read_file_storage
from views import RESULTS
from views import ProbeWorker
from views import probe


def as_user(browser, user):
    browser.authorization = ('Basic', (user, 'secret'))
    return browser


@pytest.fixture
def app(zope):
    """The application in a connection of the test's thread."""
    app = Zope2.app()
    yield app
    transaction.abort()
    app._p_jar.close()


def last_transaction(db):
    return db.undoInfo(0, 1)[0]


def transaction_of(db, job_id):
    """The transaction of a durable job's work, noted "job NAME (ID)" (the
    runner's own transactions, such as filing it after, name it too)."""
    return [entry for entry in db.undoInfo(0, 20)
            if '(%s)' % job_id in entry['description']][0]


def test_the_zope_host_is_wired_by_the_librarys_zcml(zope):
    assert isinstance(get_host(), zope_host.ZopeHost)
    assert get_host().server_url == SERVER_URL
    assert zope['db'].close.stops_background_work


def test_a_job_runs_as_the_request_user_on_wrapped_objects(zope, browser):
    job_id = as_user(browser, 'admin').get(
        '/bgsite/@@start-job', {'key': 'admin-job'}).text
    status = jobs.wait(job_id, TIMEOUT)
    assert (status.state, status.principal) == ('succeeded', 'admin')
    seen = RESULTS['admin-job']
    assert (seen['user'], seen['manage']) == ('admin', True)
    assert seen['site_in_app'] and seen['site_path'] == ('', 'bgsite')
    assert seen['site_url'] == SERVER_URL + '/bgsite'
    assert seen['doc_url'] == SERVER_URL + '/bgsite/docs'
    assert seen['request_is_the_units'] and seen['request_user'] == 'admin'
    # Written as the publisher writes it: the Undo tab says "by admin".
    entry = last_transaction(zope['db'])
    assert entry['user_name'] == ' admin'
    undo_page = browser.get('/Control_Panel/Database/main/manage_UndoForm')
    assert 'by <strong> admin</strong>' in undo_page.text


@pytest.mark.parametrize('user, manage', [('admin', True), ('bob', False)])
def test_a_durable_job_runs_as_the_request_user_on_wrapped_objects(
        zope, browser, user, manage):
    key = 'durable-%s' % user
    job_id = as_user(browser, user).get('/bgsite/@@enqueue-job',
                                        {'key': key}).text
    assert QueueRunner(zope['db']).run_pending() >= 1
    status = jobs.get_status(job_id)
    assert (status.state, status.principal) == ('succeeded', user)
    seen = RESULTS[key]
    assert (seen['user'], seen['manage']) == (user, manage)
    assert seen['site_in_app'] and seen['site_path'] == ('', 'bgsite')
    assert seen['doc_url'] == SERVER_URL + '/bgsite/docs'
    assert seen['request_user'] == user
    assert transaction_of(zope['db'], job_id)['user_name'] == ' %s' % user


def test_a_user_without_a_permission_lacks_it_in_the_job(browser):
    job_id = as_user(browser, 'bob').get(
        '/bgsite/@@start-job', {'key': 'bob-job'}).text
    assert jobs.wait(job_id, TIMEOUT).state == 'succeeded'
    assert (RESULTS['bob-job']['user'],
            RESULTS['bob-job']['manage']) == ('bob', False)


def test_a_worker_started_in_a_request_runs_as_its_user(browser):
    as_user(browser, 'admin').get('/bgsite/@@start-worker',
                                  {'key': 'from-view'})
    worker = RESULTS['worker from-view']
    worker.join(TIMEOUT)
    assert worker.status.units_done == 1
    seen = RESULTS['from-view']
    assert (seen['user'], seen['manage'], seen['site_path']) == (
        'admin', True, ('', 'bgsite'))


def test_a_worker_of_a_user_without_a_permission_lacks_it(browser):
    as_user(browser, 'bob').get('/bgsite/@@start-worker', {'key': 'bob'})
    worker = RESULTS['worker bob']
    worker.join(TIMEOUT)
    assert worker.status.units_done == 1
    assert (RESULTS['bob']['user'], RESULTS['bob']['manage']) == (
        'bob', False)


def test_a_site_made_in_the_same_request_gets_its_worker(browser):
    as_user(browser, 'admin').get('/@@make-site', {'name': 'fresh'})
    worker = RESULTS['worker fresh']
    worker.join(TIMEOUT)
    assert worker.status.units_done == 1
    assert RESULTS['fresh']['site_path'] == ('', 'fresh')
    assert RESULTS['fresh']['site_url'] == SERVER_URL + '/fresh'


def thread_state():
    """What a thread holds of security, site, job and transaction."""
    from zope.component import hooks
    from zope.security.management import queryInteraction
    from zope.security.management import restoreInteraction
    from cipher.background.scope import transaction_in_progress
    from zope.globalrequest import getRequest
    state = dict(security_manager=get_ident() in _managers,
                 request=getRequest(),
                 interaction=queryInteraction(), site=hooks.getSite(),
                 job=jobs.current_job(),
                 transaction=transaction_in_progress())
    restoreInteraction()  # the "previous interaction" slot, made current
    state['previous_interaction'] = queryInteraction()
    return state


def test_two_jobs_on_one_pool_thread_share_nothing(app):
    scheduler = BackgroundScheduler(max_workers=1)
    try:
        ids = [jobs.submit(probe, (app.bgsite.docs, key), site=app.bgsite,
                           user=user, after_commit=False,
                           scheduler=scheduler)
               for key, user in (('first', 'admin'), ('second', 'bob'))]
        assert [jobs.wait(i, TIMEOUT).state for i in ids] == [
            'succeeded', 'succeeded']
        # A bare task on the same thread, after both: what is left there.
        task_id = scheduler.start(thread_state)
        left = scheduler.future[task_id].result(TIMEOUT)
    finally:
        scheduler.shutdown(wait=True)
    assert left == dict(security_manager=False, interaction=None,
                        request=None,
                        previous_interaction=None, site=None, job=None,
                        transaction=False)
    first, second = RESULTS['first'], RESULTS['second']
    assert first['thread'] == second['thread']
    assert (first['user'], first['manage']) == ('admin', True)
    assert (second['user'], second['manage']) == ('bob', False)
    # AccessControl keeps managers by thread id: none is left there.
    assert first['thread'] not in _managers


def test_an_anonymous_request_is_asked_to_log_in(browser):
    # The view is public; the work it starts is not started for nobody,
    # and the publisher answers with a login challenge, not an error.
    response = browser.get('/bgsite/@@start-job', {'key': 'anonymous'},
                           status=401)
    assert 'WWW-Authenticate' in response.headers
    assert 'anonymous' not in RESULTS


def test_not_a_site_messages_name_what_to_do(app):
    host = get_host()
    assert '/@@components.html' in host.not_a_site_message(app)
    assert '//@@' not in host.not_a_site_message(app)
    assert 'cannot be made one' in host.not_a_site_message(
        app.bgsite.acl_users)


def test_work_without_a_user_is_refused_in_zope(app):
    with pytest.raises(PrincipalRequired, match='nobody is logged in'):
        jobs.submit(probe, (app.bgsite.docs, 'nobody'), site=app.bgsite)
    with pytest.raises(PrincipalRequired):
        ProbeWorker.forSite(app.bgsite)
    assert 'nobody' not in RESULTS


def test_an_unknown_user_never_runs(zope, app):
    with pytest.raises(PrincipalNotFound, match="'ghost'"):
        jobs.submit(probe, (app.bgsite.docs, 'ghost'), site=app.bgsite,
                    user='ghost')
    # A user gone by the time the work runs: refused in the runner, once.
    unit = UnitOfWork(zope['db'], app.bgsite._p_oid, 'ghost',
                      site_hint=('', 'bgsite'))
    with pytest.raises(PrincipalNotFound, match='no user folder'):
        unit.run(lambda: RESULTS.setdefault('ghost', 'ran'))
    assert 'ghost' not in RESULTS


def test_a_pluggable_auth_service_user(zope, app):
    job_id = jobs.submit(probe, (app.passite, 'carol'), site=app.passite,
                         user='carol-id', after_commit=False)
    assert jobs.wait(job_id, TIMEOUT).state == 'succeeded'
    assert RESULTS['carol']['user'] == 'carol-id'
    assert RESULTS['carol']['manage'] is False
    assert last_transaction(zope['db'])['user_name'] == 'passite carol-id'


def test_system_work_runs_with_every_permission(app):
    job_id = jobs.submit(probe, (app.bgsite.docs, 'system'), site=app.bgsite,
                         user=SYSTEM, after_commit=False)
    assert jobs.wait(job_id, TIMEOUT).state == 'succeeded'
    assert RESULTS['system']['manage'] is True


def test_site_workers_take_zope_paths(zope):
    [worker] = SiteWorkers(ProbeWorker, '/bgsite', 'admin',
                           key='declared')(zope['db'])
    worker.start()
    worker.join(TIMEOUT)
    assert RESULTS['declared']['site_path'] == ('', 'bgsite')
    with pytest.raises(SiteNotFound, match="no 'nope' in the application "
                                           "root .*'bgsite'"):
        SiteWorkers(ProbeWorker, '/nope', 'admin')(zope['db'])


def test_not_a_site_names_the_zope_way_to_make_one(app):
    with pytest.raises(NotASite, match='Make site'):
        jobs.submit(probe, (app.bgsite.docs, 'x'), site=app.bgsite.docs,
                    user='admin')


class Finishing(ProbeWorker):
    """A unit that is still running when the stop comes, and finishes."""

    started = None

    def doWork(self):
        self.started.set()
        assert self._stop_event.wait(TIMEOUT)  # the stop came mid-unit
        from zope.component import hooks
        hooks.getSite().finished = True


def test_closing_the_database_stops_work_first(tmp_path):
    import threading

    from five.localsitemanager import make_objectmanager_site
    from OFS.Application import Application
    from OFS.Folder import manage_addFolder
    path = str(tmp_path / 'Data.fs')
    db = DB(FileStorage(path))
    conn = db.open()
    conn.root()['Application'] = Application()
    transaction.commit()
    app = conn.root()['Application']
    manage_addFolder(app, 'site')
    make_objectmanager_site(app.site)
    transaction.commit()
    conn.close()
    notify(DatabaseOpenedWithRoot(db))  # as Zope's start-up does
    [worker] = SiteWorkers(Finishing, '/site', SYSTEM)(db)
    worker.started = threading.Event()
    worker.start()
    assert worker.started.wait(TIMEOUT)
    db.close()  # what runwsgi does when it stops: the unit ends first
    assert not worker.is_alive()
    assert worker.status.units_done == 1
    assert read_file_storage(
        path, lambda root: root['Application'].site.finished) is True


def test_start_up_workers_are_switched_per_process(monkeypatch):
    import sys
    settings = {}
    monkeypatch.setattr(instance, 'product_config', lambda: settings)
    assert instance._startup_workers_setting() is None
    settings['start-workers'] = 'off'
    assert 'start-workers off' in instance._startup_workers_setting()
    settings['start-workers'] = 'on'
    monkeypatch.setitem(sys.modules, 'Zope2.utilities.zconsole', sys)
    assert 'zconsole' in instance._startup_workers_setting()
    settings['start-workers'] = 'always'
    assert instance._startup_workers_setting() is None
    settings['start-workers'] = 'sometimes'
    with pytest.raises(Exception, match='on, off or always'):
        instance._startup_workers_setting()


def test_the_readme_recipe_runs_as_shown(zope, app):
    # The view of README.rst's "Zope and Plone" section, called as the
    # publisher would call it for admin.
    import os
    import re
    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.SecurityManagement import noSecurityManager
    from zope.component import hooks
    readme = open(os.path.join(os.path.dirname(__file__), '..', '..',
                               'README.rst')).read()
    section = readme.split('Zope and Plone\n====')[1].split('\nPyramid\n')[0]
    code = re.search(r'permission="zope2.View" />``\)::\n\n(.*?)\n\n\S',
                     section, re.S).group(1)
    namespace = {}
    exec(compile('\n'.join(line[4:] for line in code.splitlines()),
                 'README.rst', 'exec'), namespace)
    from Testing.makerequest import makerequest
    wrapped = makerequest(app)
    newSecurityManager(None, wrapped.acl_users.getUserById('admin'))
    hooks.setSite(wrapped.bgsite)
    try:
        view = namespace['CheckView'](wrapped.bgsite.docs, wrapped.REQUEST)
        job_id = view()
        transaction.commit()
    finally:
        hooks.setSite(None)
        noSecurityManager()
    assert jobs.wait(job_id, TIMEOUT).state == 'succeeded'
    transaction.abort()  # a fresh view of the database
    docs = app.bgsite.docs
    assert (docs.checked_by, docs.checked_url) == (
        'admin', SERVER_URL + '/bgsite/docs')


def test_sigterm_is_taken_only_where_nobody_handles_it(zope, monkeypatch):
    import signal
    import threading
    # The instance's start-up (in this process's main thread) took it.
    assert signal.getsignal(signal.SIGTERM) is instance._sigterm
    assert instance.stop_on_sigterm() is False  # handled already
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(instance.stop_on_sigterm()))
    thread.start()
    thread.join(TIMEOUT)
    assert answers == [False]  # never from another thread
    monkeypatch.setattr(instance, 'product_config',
                        lambda: {'stop-on-sigterm': 'maybe'})
    with pytest.raises(Exception, match='must be on or off'):
        instance.process_starting(None)


def test_the_monitor_view_shows_each_user_their_jobs(zope, browser):
    job_id = as_user(browser, 'bob').get('/bgsite/@@enqueue-job',
                                         {'key': 'monitored'}).text
    monitor = '/bgsite/@@background-monitor'
    browser.authorization = None
    browser.get(monitor + '/jobs.json', status=401)  # Anonymous

    def job_ids(user):
        return [job['id'] for job in as_user(browser, user).get(
            monitor + '/jobs.json?state=queued').json['jobs']]
    assert job_ids('bob') == [job_id]
    assert job_ids('eve') == []
    assert job_id in job_ids('admin')  # Manager: the Monitor permission
    as_user(browser, 'eve').get('%s/job/%s.json' % (monitor, job_id),
                                status=403)
    overview = as_user(browser, 'admin').get(monitor + '/overview.json').json
    assert overview['viewer'] == {'principal': 'admin', 'monitor': True}
    page = as_user(browser, 'bob').get('%s/job/%s' % (monitor, job_id))
    assert 'href="/bgsite/@@background-monitor/static/monitor.css"' in \
        page.text
    assert browser.get(monitor + '/static/monitor.js').status_int == 200
    page.forms[0].submit(status=303)  # Cancel, with bob's token
    assert jobs.get_status(job_id).state == 'cancelled'
    assert QueueRunner(zope['db']).run_pending() == 0
    as_user(browser, 'bob').post(monitor + '/job/%s/cancel' % job_id,
                                 status=403)  # no token


def test_a_sites_monitor_shows_that_sites_jobs_to_its_own_users(
        zope, browser):
    job_id = as_user(browser, 'bob').get('/bgsite/@@enqueue-job',
                                         {'key': 'tenant-check'}).text
    tenant = '/tenant/@@background-monitor'
    # Another bob, of the tenant's user folder: not the job's owner.
    assert as_user(browser, 'bob').get(
        tenant + '/jobs.json').json['jobs'] == []
    as_user(browser, 'bob').get('%s/job/%s.json' % (tenant, job_id),
                                status=404)
    token = browser.get(tenant + '/overview.json').json['csrf_token']
    as_user(browser, 'bob').post(
        '%s/job/%s/cancel' % (tenant, job_id), {'csrf_token': token},
        status=404)
    # The tenant's Manager: all of the tenant's jobs, none of /bgsite's,
    # and no worker of the process.
    overview = as_user(browser, 'tm').get(tenant + '/overview.json').json
    assert overview['viewer']['monitor'] is True
    assert overview['counts'] == {} and overview['workers'] == []
    assert as_user(browser, 'tm').get(
        '%s/job/%s.json' % (tenant, job_id), status=404)
    as_user(browser, 'tm').post(
        tenant + '/worker/anything/stop',
        {'csrf_token': overview['csrf_token']}, status=403)
    assert jobs.get_status(job_id).state == 'queued'
    # The root's Manager sees every site's jobs there.
    root = as_user(browser, 'admin').get(
        '/@@background-monitor/jobs.json?state=queued').json['jobs']
    assert job_id in [job['id'] for job in root]
    QueueRunner(zope['db']).run_pending()
