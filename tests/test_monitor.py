"""The monitor as a WSGI application, through WebTest: every route, the
JSON shapes, who sees what (owner, other user, anonymous, monitor), the
CSRF token, and the actions."""
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
import transaction
import webtest

from cipher.background import MemoryJobStore
from cipher.background import get_status
from cipher.background import set_job_store
from cipher.background.durable import enqueue_call
from cipher.background.monitor import MonitorApp
from cipher.background.monitor import Viewer
from cipher.background.queuerunner import QueueRunner
from cipher.background.thread import BackgroundWorkerThread
import durable_jobs
from helpers import TIMEOUT

VIEWERS = {'bob': Viewer('bob'), 'ann': Viewer('ann'),
           'boss': Viewer('boss', monitor=True),
           'odd<b>': Viewer('odd<b>')}


def viewer(environ):
    return VIEWERS.get(environ.get('HTTP_X_USER'))


@pytest.fixture
def store():
    """A job store of this process holding a job of bob's that runs and
    one of ann's that failed."""
    store = MemoryJobStore()
    previous = set_job_store(store)
    store.add('bob-1', 'myapp.index', 'queued', 'bob')
    store.transition('bob-1', 'running', progress=40,
                     progress_data='page 4 of 10')
    store.write('bob-1', 'indexing secret.txt\n')
    store.add('ann-1', 'myapp.report', 'queued', 'ann')
    store.transition('ann-1', 'failed', error='ValueError: no',
                     traceback='Traceback...\nValueError: no')
    yield store
    set_job_store(previous)


@pytest.fixture
def site(team_site):
    return team_site


@pytest.fixture
def app(store, file_db):
    return webtest.TestApp(MonitorApp(viewer, queues=[file_db],
                                      secret=b'test'))


def as_(user):
    return {'X-User': user}


def token(app, user):
    return app.get('/overview.json', headers=as_(user)).json['csrf_token']


# -- who sees what --

@pytest.mark.parametrize('path', ['/', '/overview.json', '/jobs',
                                  '/jobs.json', '/job/bob-1',
                                  '/job/bob-1.json'])
def test_anonymous_sees_nothing(app, path):
    response = app.get(path, status=401)
    assert 'bob' not in response.text and 'secret' not in response.text


def test_anonymous_cannot_act(app, store):
    app.post('/job/bob-1/cancel', status=401)
    assert store.get('bob-1').state == 'running'


def test_an_owner_sees_their_own_jobs_in_full(app):
    jobs = app.get('/jobs.json', headers=as_('bob')).json['jobs']
    assert [job['id'] for job in jobs] == ['bob-1']
    job = app.get('/job/bob-1.json', headers=as_('bob')).json
    assert job['output'] == 'indexing secret.txt\n'
    assert (job['progress'], job['progress_data']) == (40, 'page 4 of 10')
    page = app.get('/job/bob-1', headers=as_('bob'))
    assert 'indexing secret.txt' in page.text
    assert '<progress max="100" value="40">' in page.text


def test_another_user_sees_that_jobs_exist_and_nothing_of_them(app):
    overview = app.get('/overview.json', headers=as_('ann')).json
    assert overview['counts'] == {'running': 1, 'failed': 1}
    assert overview['workers'] == []
    jobs = app.get('/jobs.json', headers=as_('ann')).json['jobs']
    assert [job['id'] for job in jobs] == ['ann-1']
    for path in ('/job/bob-1.json', '/job/bob-1'):
        response = app.get(path, headers=as_('ann'), status=403)
        assert 'secret' not in response.text
    assert 'secret' not in app.get('/jobs', headers=as_('ann')).text


def test_the_monitor_permission_sees_everything(app):
    jobs = app.get('/jobs.json', headers=as_('boss')).json['jobs']
    assert sorted(job['id'] for job in jobs) == ['ann-1', 'bob-1']
    job = app.get('/job/ann-1.json', headers=as_('boss')).json
    assert job['traceback'].endswith('ValueError: no')
    page = app.get('/', headers=as_('boss'))
    assert 'Workers' in page.text


def test_what_users_wrote_is_escaped(app, store):
    store.add('odd-1', 'myapp.<i>', 'queued', 'odd<b>')
    page = app.get('/jobs', headers=as_('odd<b>'))
    assert 'odd&lt;b&gt;' in page.text and 'myapp.&lt;i&gt;' in page.text
    assert '<b>' not in page.text and '<i>' not in page.text


# -- JSON --

def test_the_json_shapes(app):
    overview = app.get('/overview.json', headers=as_('boss')).json
    assert set(overview) == {'counts', 'finished_per_minute', 'workers',
                             'csrf_token', 'viewer'}
    assert len(overview['finished_per_minute']) == 30
    assert sum(overview['finished_per_minute']) == 1  # ann's failure
    job = app.get('/jobs.json', headers=as_('boss')).json['jobs'][0]
    assert set(job) == {'id', 'name', 'state', 'progress', 'attempts',
                        'cancel_requested', 'created', 'started',
                        'finished', 'principal', 'done'}
    detail = app.get('/job/bob-1.json', headers=as_('boss')).json
    assert set(detail) - set(job) == {'progress_data', 'result', 'error',
                                      'traceback', 'output', 'durable'}


def test_filters_and_their_mistakes(app):
    jobs = app.get('/jobs.json?state=failed', headers=as_('boss')).json
    assert [job['id'] for job in jobs['jobs']] == ['ann-1']
    jobs = app.get('/jobs.json?name=index', headers=as_('boss')).json
    assert [job['id'] for job in jobs['jobs']] == ['bob-1']
    response = app.get('/jobs.json?state=sleeping', headers=as_('boss'),
                       status=400)
    assert "no job state 'sleeping'" in response.text
    app.get('/jobs.json?limit=many', headers=as_('boss'), status=400)
    app.get('/job/nothing.json', headers=as_('boss'), status=404)
    app.get('/nowhere', headers=as_('boss'), status=404)


# -- actions --

def test_an_action_without_the_token_does_nothing(app, store):
    response = app.post('/job/bob-1/cancel', headers=as_('bob'),
                        status=403)
    assert 'csrf_token' in response.text
    app.post('/job/bob-1/cancel', {'csrf_token': token(app, 'ann')},
             headers=as_('bob'), status=403)  # another user's token
    assert store.get('bob-1').cancel_requested is False


def test_the_owner_cancels_their_job_and_nobody_elses(app, store):
    app.post('/job/bob-1/cancel', {'csrf_token': token(app, 'ann')},
             headers=as_('ann'), status=403)
    assert store.get('bob-1').cancel_requested is False
    response = app.post('/job/bob-1/cancel',
                        {'csrf_token': token(app, 'bob')},
                        headers=as_('bob'), status=303)
    assert response.location.endswith('/job/bob-1')
    assert store.get('bob-1').cancel_requested is True


def test_a_script_acts_with_the_header_and_gets_json(app, store):
    response = app.post('/job/bob-1/cancel', headers=dict(
        as_('boss'), Accept='application/json',
        **{'X-CSRF-Token': token(app, 'boss')}))
    assert response.json == {'job': 'bob-1', 'action': 'cancel',
                             'done': True}


def test_a_failed_durable_job_is_run_again(app, file_db, site):
    job_id = enqueue_call(durable_jobs.fail, ('no',), site=site, user='ann',
                          attempts=1)
    transaction.commit()
    assert QueueRunner(file_db).run_pending() == 1
    assert get_status(job_id).state == 'failed'
    page = app.get('/job/%s' % job_id, headers=as_('ann'))
    response = page.forms[0].submit(headers=as_('ann'), status=303)
    assert response.location.endswith('/job/%s' % quote(job_id, safe=''))
    status = get_status(job_id)
    assert (status.state, status.attempts, status.error) == (
        'queued', 0, None)
    assert QueueRunner(file_db).run_pending() == 1  # and it runs again
    assert (get_status(job_id).state, get_status(job_id).attempts) == (
        'failed', 1)


def test_only_a_durable_job_is_run_again(app, store):
    app.post('/job/ann-1/requeue', {'csrf_token': token(app, 'ann')},
             headers=as_('ann'), status=409)


def test_durable_jobs_are_listed_beside_the_process_jobs(app, file_db, site):
    job_id = enqueue_call(durable_jobs.noop, site=site, user='bob')
    transaction.commit()
    jobs = app.get('/jobs.json', headers=as_('bob')).json['jobs']
    assert [job['id'] for job in jobs] == [job_id, 'bob-1']
    assert app.get('/job/%s.json' % job_id,
                   headers=as_('bob')).json['durable'] is True


class _Idle(BackgroundWorkerThread):
    """Waits until stopped."""

    def scheduleNextWork(self):
        return self.wait(3600)


def test_the_monitor_stops_a_worker(app, file_db, site):
    worker = _Idle(file_db, site._p_oid, 'site', 'bob')
    worker.start()
    try:
        overview = app.get('/overview.json', headers=as_('boss')).json
        assert [w['name'] for w in overview['workers']] == [worker.name]
        app.post('/worker/%s/stop' % worker.name,
                 {'csrf_token': token(app, 'bob')}, headers=as_('bob'),
                 status=403)
        assert not worker.stopped
        page = app.get('/', headers=as_('boss'))
        page.forms[0].submit(headers=as_('boss'), status=303)
        worker.join(TIMEOUT)
        assert not worker.is_alive()
    finally:
        worker.stop(TIMEOUT)


# -- the page's own files --

def test_static_files_and_headers(app):
    script = app.get('/static/monitor.js')
    assert script.content_type in ('application/javascript',
                                   'text/javascript')
    assert 'textContent' in script.text
    app.get('/static/monitor.css')
    app.get('/static/../monitor.py', status=404)
    page = app.get('/', headers=as_('bob'))
    assert "default-src 'self'" in page.headers['Content-Security-Policy']
    assert page.headers['X-Frame-Options'] == 'DENY'
    assert '<script src=' in page.text and '<script>' not in page.text


def test_a_viewer_callable_is_required():
    with pytest.raises(TypeError, match='viewer must be a callable'):
        MonitorApp(None)


# -- standalone --

def test_the_standalone_monitor_wants_its_token(tmp_path, site, file_db):
    job_id = enqueue_call(durable_jobs.noop, site=site, user='bob')
    transaction.commit()
    file_db.close()  # the command opens the file itself
    command = subprocess.Popen(
        [sys.executable, '-m', 'cipher.background', 'monitor', '--zodb',
         'file://%s' % (tmp_path / 'Data.fs'), '--port', '0'],
        stderr=subprocess.PIPE, text=True)
    try:
        line = command.stderr.readline()
        assert 'monitor at http://127.0.0.1:' in line, line
        url = line.split(' at ', 1)[1].strip()
        base, token = url.split('?token=')
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + 'jobs.json', timeout=TIMEOUT)
        assert refused.value.code == 401
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor())
        page = opener.open(url, timeout=TIMEOUT).read().decode()
        assert 'Background work' in page  # the token set a cookie
        jobs = json.loads(opener.open(base + 'jobs.json',
                                      timeout=TIMEOUT).read())['jobs']
        assert [(job['id'], job['state']) for job in jobs] == [
            (job_id, 'queued')]
        scripted = urllib.request.Request(
            base + 'overview.json',
            headers={'Authorization': 'Bearer ' + token})
        overview = json.loads(urllib.request.urlopen(
            scripted, timeout=TIMEOUT).read())
        assert overview['counts'] == {'queued': 1}
    finally:
        command.send_signal(signal.SIGTERM)
        assert command.wait(TIMEOUT) == 0


@pytest.mark.parametrize('content, mode, message', [
    (b'short\n', 0o600, 'shorter than 12 characters'),
    (b'\xff\xfe long enough password\n', 0o600, 'printable ASCII'),
    (b'a long enough password\n', 0o644, 'may be read by others'),
    (None, 0o600, 'not a regular file'),  # a FIFO: never waited on
])
def test_bad_password_files_are_refused(tmp_path, content, mode, message):
    secret = tmp_path / 'password'
    if content is None:
        os.mkfifo(str(secret))
    else:
        secret.write_bytes(content)
    secret.chmod(mode)
    done = subprocess.run(
        [sys.executable, '-m', 'cipher.background', 'monitor', '--zodb',
         'memory://', '--password-file', str(secret)],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert message in done.stderr and 'Traceback' not in done.stderr


def test_a_password_file_may_start_with_a_byte_order_mark(tmp_path):
    from cipher.background._climonitor import read_token
    secret = tmp_path / 'password'
    secret.write_bytes(b'\xef\xbb\xbfa long enough password\nmore\n')
    secret.chmod(0o600)
    assert read_token(str(secret)) == 'a long enough password'


def test_the_token_link_keeps_the_page_and_sets_no_token_cookie():
    from cipher.background._climonitor import TokenGate
    gate = TokenGate(lambda viewer: MonitorApp(viewer), 'T' * 20, 8765)
    app = webtest.TestApp(gate)
    response = app.get('/jobs', {'state': 'failed', 'token': 'T' * 20},
                       status=303)
    assert response.location.endswith('/jobs?state=failed')
    cookie = response.headers['Set-Cookie']
    assert 'T' * 20 not in cookie and 'HttpOnly' in cookie
    assert cookie.startswith('cipher_background_monitor_8765=')
    assert app.get('/overview.json').json['viewer'] == {  # the cookie works
        'principal': None, 'monitor': True}
    injected = app.get('/%0d%0aX-Injected:%20yes', {'token': 'T' * 20},
                       status=303)
    assert 'X-Injected' not in injected.headers
    assert injected.location.endswith('/%0D%0AX-Injected%3A%20yes')
    assert app.get('//elsewhere.example/', {'token': 'T' * 20},
                   status=303).location.endswith('/elsewhere.example/')


def test_what_json_cannot_hold_comes_as_text_or_null(app, store):
    store.add('nan-1', 'myapp.f', 'queued', 'bob')
    store.transition('nan-1', 'running', progress=float('nan'))
    store.transition('nan-1', 'succeeded', result=float('inf'))
    job = app.get('/job/nan-1.json', headers=as_('bob')).json
    assert (job['progress'], job['result']) == (None, 'inf')


def test_head_sends_no_body_and_paths_are_decoded_once(app, store):
    response = app.head('/jobs.json', headers=as_('bob'))
    assert response.body == b''
    app.get('/job/bob%252D1.json', headers=as_('bob'), status=404)


def test_an_owner_may_not_run_again_what_may_have_committed(app, file_db,
                                                            site):
    from cipher.background.queuestore import get_queue
    job_id = enqueue_call(durable_jobs.noop, site=site, user='ann')
    transaction.commit()
    with file_db.transaction() as conn:  # as a runner records it
        queue = get_queue(conn.root())
        queue.finish(queue.jobs[job_id], 'outcome-unknown', 1.0)
    page = app.get('/job/%s' % job_id, headers=as_('ann'))
    assert 'Run again' not in page.text
    response = app.post('/job/%s/requeue' % job_id,
                        {'csrf_token': token(app, 'ann')},
                        headers=as_('ann'), status=403)
    assert 'apply it twice' in response.text
    app.post('/job/%s/requeue' % job_id, {'csrf_token': token(app, 'boss')},
             headers=as_('boss'), status=303)
    assert get_status(job_id).state == 'queued'


def test_a_read_only_database_answers_503_at_once(tmp_path, site, file_db):
    from ZODB import DB
    from ZODB.FileStorage import FileStorage
    job_id = enqueue_call(durable_jobs.noop, site=site, user='ann')
    transaction.commit()
    file_db.close()
    db = DB(FileStorage(str(tmp_path / 'Data.fs'), read_only=True))
    try:
        app = webtest.TestApp(MonitorApp(viewer, queues=[db]))
        response = app.post('/job/%s/cancel' % job_id, headers=dict(
            as_('ann'), **{'X-CSRF-Token': token(app, 'ann')}), status=503)
        assert 'read-only' in response.text
        assert response.headers['X-Frame-Options'] == 'DENY'
        assert get_status(job_id).state == 'queued'
    finally:
        db.close()
