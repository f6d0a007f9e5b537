"""The monitor in a real browser: Playwright driving Debian's Chromium
(.ci/run installs it) against the monitor served on 127.0.0.1.  A
progress bar moves without a reload, the Cancel button cancels a running
job, another user sees nothing of it, and the pages are photographed at
1280 px and at a phone's width (written to test-artifacts/)."""
import os
import socketserver
import threading
import wsgiref.simple_server

import pytest
import transaction

from cipher.background import check_cancelled
from cipher.background import job_output
from cipher.background import set_progress
from cipher.background import submit
from cipher.background import wait
from cipher.background.demo import make_site
from cipher.background.monitor import MonitorApp
from cipher.background.monitor import Viewer
from helpers import TIMEOUT

CHROMIUM = '/usr/bin/chromium'
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'test-artifacts')
USERS = {'bob': Viewer('bob'), 'ann': Viewer('ann'),
         'boss': Viewer('boss', monitor=True)}

sync_api = pytest.importorskip('playwright.sync_api')


def cookie_viewer(environ):
    """Tests only: the user named by a cookie (a host authenticates)."""
    for part in environ.get('HTTP_COOKIE', '').split(';'):
        name, _, value = part.strip().partition('=')
        if name == 'user':
            return USERS.get(value)
    return None


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope='module')
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip('Chromium is not installed (.ci/run installs it: '
                    'apt-get install chromium)')
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=['--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync'])
        yield browser
        browser.close()


@pytest.fixture
def monitor(file_db):
    """(base URL, site): the monitor of this process on a free port."""
    server = wsgiref.simple_server.make_server(
        '127.0.0.1', 0, MonitorApp(cookie_viewer, queues=[file_db]),
        server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = file_db.open()
    site = make_site(conn.root(), 'site', users=('bob', 'ann', 'boss'))
    transaction.commit()
    yield 'http://127.0.0.1:%d/' % server.server_port, site
    server.shutdown()
    server.server_close()
    transaction.abort()
    conn.close()


def page_as(browser, base, user, width=1280, height=800):
    context = browser.new_context(viewport={'width': width,
                                            'height': height})
    context.add_cookies([{'name': 'user', 'value': user, 'url': base}])
    return context.new_page()


steps = [threading.Event() for _ in range(3)]


def reindex(name):
    """A job that reports its progress as the test lets it go on."""
    print('reindexing', name, file=job_output())
    set_progress(10, 'started')
    for step, value in zip(steps, (60, 100)):
        if not step.wait(TIMEOUT):
            raise RuntimeError('the test never let the job go on')
        set_progress(value, 'at %d' % value)
    return 'reindexed %s' % name


def until_cancelled():
    """A job that runs until it is cancelled."""
    print('secret output of bob', file=job_output())
    set_progress(5)
    for _ in range(TIMEOUT * 100):
        check_cancelled()
        threading.Event().wait(0.01)  # the job's own pace
    return 'never cancelled'


def progress_of(page, job_id):
    return page.eval_on_selector(
        'tr[data-id="%s"] progress' % job_id, 'node => node.value')


def test_a_progress_bar_moves_without_a_reload(browser, monitor):
    base, site = monitor
    for step in steps:
        step.clear()
    job_id = submit(reindex, ('catalog',), site=site, user='bob',
                    after_commit=False)
    page = page_as(browser, base, 'bob')
    page.goto(base + 'jobs')
    page.wait_for_function(
        'id => { const bar = document.querySelector('
        '`tr[data-id="${id}"] progress`); return bar && bar.value == 10 }',
        arg=job_id, timeout=TIMEOUT * 1000)
    page.evaluate('window.loadedOnce = true')
    steps[0].set()
    page.wait_for_function(
        'id => document.querySelector(`tr[data-id="${id}"] progress`)'
        '.value == 60', arg=job_id, timeout=TIMEOUT * 1000)
    assert page.evaluate('window.loadedOnce') is True  # the same page
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, 'monitor-jobs-1280.png'),
                    full_page=True)
    steps[1].set()
    assert wait(job_id, TIMEOUT).state == 'succeeded'
    page.wait_for_selector('tr[data-id="%s"] .state-succeeded' % job_id,
                           timeout=TIMEOUT * 1000)
    page.context.close()


def test_the_cancel_button_cancels_a_running_job(browser, monitor):
    base, site = monitor
    job_id = submit(until_cancelled, site=site, user='bob',
                    after_commit=False)
    page = page_as(browser, base, 'bob')
    page.goto(base + 'job/' + job_id)
    page.wait_for_selector('td[data-field="state"] .state-running',
                           timeout=TIMEOUT * 1000)
    page.get_by_role('button', name='Cancel').click()
    status = wait(job_id, TIMEOUT)
    assert status.state == 'cancelled'
    page.wait_for_selector('td[data-field="state"] .state-cancelled',
                           timeout=TIMEOUT * 1000)
    assert 'secret output of bob' in page.inner_text('#output')
    page.context.close()

    other = page_as(browser, base, 'ann')
    response = other.goto(base + 'job/' + job_id)
    assert response.status == 403
    assert 'secret output' not in other.content()
    other.goto(base + 'jobs')
    assert other.query_selector('tr[data-id="%s"]' % job_id) is None
    other.context.close()


@pytest.mark.parametrize('width, height', [(1280, 800), (390, 844)])
def test_the_pages_fit_a_desk_and_a_phone(browser, monitor, width, height):
    base, site = monitor
    for step in steps:
        step.clear()
    running = submit(reindex, ('catalog',), site=site, user='boss',
                     after_commit=False)
    page = page_as(browser, base, 'boss', width, height)
    os.makedirs(ARTIFACTS, exist_ok=True)
    for name, path in (('overview', ''), ('jobs', 'jobs'),
                       ('job', 'job/' + running)):
        page.goto(base + path)
        page.wait_for_selector('main')
        scroll = page.evaluate(
            'document.documentElement.scrollWidth - window.innerWidth')
        assert scroll <= 0, '%s is wider than the screen' % name
        page.screenshot(path=os.path.join(
            ARTIFACTS, 'monitor-%s-%d.png' % (name, width)), full_page=True)
    for step in steps:
        step.set()
    assert wait(running, TIMEOUT).state == 'succeeded'
    page.context.close()
