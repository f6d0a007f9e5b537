"""The Pyramid host, in a real Pyramid application (pyramid_tm,
pyramid_zodbconn, pyramid_retry) driven through WebTest, in pyramid_tm's
default and explicit transaction-manager modes."""
import pytest
import webtest

import pyramid_app
from cipher.background import jobs
from cipher.background.host import DEFAULT_HOST
from cipher.background.host import set_host
from cipher.background.pyramid import PyramidHost
from helpers import TIMEOUT


@pytest.fixture(params=['default', 'explicit'])
def app(request, tmp_path):
    del pyramid_app.seen[:]
    del pyramid_app.attempts[:]
    wsgi = pyramid_app.make_app('file://%s' % (tmp_path / 'Data.fs'),
                                explicit=request.param == 'explicit')
    yield webtest.TestApp(wsgi)
    set_host(None)
    pyramid_app.close(wsgi)


def _wait(job_id):
    return jobs.wait(job_id, TIMEOUT)


def test_include_makes_work_pyramid_work(app):
    from cipher.background.host import get_host
    assert isinstance(get_host(), PyramidHost)
    assert get_host() is not DEFAULT_HOST


def test_a_job_runs_after_commit_as_the_request_user(app):
    job_id = app.post('/add', {'name': 'n1'},
                      headers={'X-User': 'alice'}).json['job']
    status = _wait(job_id)
    assert status.state == 'succeeded', status.error
    assert status.principal == 'alice'
    # The job's own connection, no zope.component site (the root is a
    # plain persistent mapping), and the user who asked.
    assert pyramid_app.seen == [('n1', 'alice', None, True)]
    assert app.get('/').json['n1'] == 'alice'


def test_a_durable_job_runs_as_the_request_user(app):
    from cipher.background import QueueRunner
    db, = app.app.registry._zodb_databases.values()
    job_id = app.post('/enqueue', {'name': 'd1'},
                      headers={'X-User': 'alice'}).json['job']
    with pytest.raises(pyramid_app.Failed):
        app.post('/enqueue', {'name': 'd2', 'fail': '1'},
                 headers={'X-User': 'bob'})
    failed = app.app.registry.durable_job
    assert QueueRunner(db).run_pending() == 1  # the failed request's: none
    status = jobs.get_status(job_id)
    assert (status.state, status.principal) == ('succeeded', 'alice')
    assert jobs.get_status(failed).state == 'unknown'
    assert pyramid_app.seen == [('d1', 'alice', None, True)]
    assert app.get('/').json['d1'] == 'alice'


def test_a_plain_root_is_the_site_of_a_job_without_arguments(app):
    job_id = app.post('/count', headers={'X-User': 'bob'}).json['job']
    status = _wait(job_id)
    assert status.state == 'succeeded', status.error
    assert app.get('/').json['count'] == 1
    assert pyramid_app.seen == [('count', 'bob', None, None)]


def test_a_job_of_a_failed_request_is_dropped_and_never_fired(app):
    with pytest.raises(pyramid_app.Failed):
        app.post('/fail', headers={'X-User': 'alice'})
    failed = app.app.registry.failed_job
    assert jobs.get_status(failed).state == 'dropped'
    # A later request of the same thread commits: the dropped job stays
    # dropped, and only the new one runs.
    job_id = app.post('/add', {'name': 'later'},
                      headers={'X-User': 'alice'}).json['job']
    assert _wait(job_id).state == 'succeeded'
    assert jobs.get_status(failed).state == 'dropped'
    assert [text for text, *_ in pyramid_app.seen] == ['later']
    assert 'failed' not in app.get('/').json


def test_the_job_of_a_retried_attempt_is_dropped(app):
    job_ids = app.post('/flaky', headers={'X-User': 'alice'}).json['jobs']
    first, second = job_ids
    assert _wait(second).state == 'succeeded'
    assert jobs.get_status(first).state == 'dropped'
    assert pyramid_app.seen == [('flaky', 'alice', None, True)]


def test_a_worker_started_after_commit_runs_as_the_request_user(app):
    app.get('/')  # a worker's site must be stored: the root is made here
    app.post('/worker', headers={'X-User': 'bob'})
    worker = app.app.registry.worker
    worker.join(TIMEOUT)
    assert worker.status.state == 'stopped'
    assert worker.status.units_done == 1
    assert app.get('/').json['worker'] == 'bob'


def test_an_anonymous_request_starts_work_with_no_user(app):
    job_id = app.post('/add', {'name': 'anon'}).json['job']
    status = _wait(job_id)
    assert status.state == 'succeeded', status.error
    assert status.principal is None
    assert app.get('/').json['anon'] is None


def test_find_user_refuses_an_unknown_user(tmp_path):
    del pyramid_app.seen[:]
    wsgi = pyramid_app.make_app('file://%s' % (tmp_path / 'Data.fs'),
                                find_user='pyramid_app:find_user')
    try:
        app = webtest.TestApp(wsgi)
        known = app.post('/add', {'name': 'a'},
                         headers={'X-User': 'alice'}).json['job']
        unknown = app.post('/add', {'name': 'g'},
                           headers={'X-User': 'ghost'}).json['job']
        assert _wait(known).state == 'succeeded'
        status = _wait(unknown)
        assert status.state == 'failed'
        assert "found no user 'ghost'" in status.error
        assert app.get('/').json == {'a': 'alice', 'g': None}
        assert [user for _, user, *_ in pyramid_app.seen] == ['alice']
    finally:
        set_host(None)
        pyramid_app.close(wsgi)


def test_the_monitor_route_shows_each_user_their_jobs(app):
    from cipher.background import QueueRunner
    db, = app.app.registry._zodb_databases.values()
    job_id = app.post('/enqueue', {'name': 'm1'},
                      headers={'X-User': 'alice'}).json['job']
    app.get('/background-monitor/jobs.json', status=401)  # anonymous

    def job_ids(user):
        return [job['id'] for job in app.get(  # other tests' jobs ended
            '/background-monitor/jobs.json?state=queued',
            headers={'X-User': user}).json['jobs']]
    assert job_ids('alice') == [job_id]
    assert job_ids('bob') == []
    assert job_ids('boss') == [job_id]
    app.get('/background-monitor/job/%s.json' % job_id,
            headers={'X-User': 'bob'}, status=403)
    page = app.get('/background-monitor/job/%s' % job_id,
                   headers={'X-User': 'alice'})
    assert 'href="/background-monitor/static/monitor.css"' in page.text
    form = page.forms[0]
    assert form.action.startswith('/background-monitor/job/')
    form.submit(headers={'X-User': 'alice'}, status=303)
    assert jobs.get_status(job_id).state == 'cancelled'
    assert QueueRunner(db).run_pending() == 0


def test_the_monitor_route_keeps_to_its_own_path(tmp_path):
    # An application's own routes beside it, and its require_csrf.
    from pyramid.config import Configurator
    settings = {'zodbconn.uri': 'file://%s' % (tmp_path / 'Data.fs')}
    with Configurator(settings=settings,
                      root_factory=pyramid_app.root_factory) as config:
        config.include('pyramid_tm')
        config.include('pyramid_zodbconn')
        config.include('cipher.background.pyramid')
        config.set_security_policy(pyramid_app.HeaderPolicy())
        config.set_default_csrf_options(require_csrf=True)
        config.add_route('stats', '/background-monitoring-stats')
        config.add_view(lambda request: {'stats': 1}, route_name='stats',
                        renderer='json')
        wsgi = config.make_wsgi_app()
    try:
        app = webtest.TestApp(wsgi)
        assert app.get('/background-monitoring-stats').json == {'stats': 1}
        app.get('/background-monitorjobs.json', status=404)
        assert app.get('/background-monitor', headers={
            'X-User': 'boss'}, status=303).location.endswith(
                '/background-monitor/')
        overview = app.get('/background-monitor/overview.json',
                           headers={'X-User': 'boss'}).json
        response = app.post('/background-monitor/job/nothing/cancel',
                            {'csrf_token': overview['csrf_token']},
                            headers={'X-User': 'boss'}, status=404)
        assert 'no job nothing' in response.text  # the monitor answered
    finally:
        set_host(None)
        pyramid_app.close(wsgi)
