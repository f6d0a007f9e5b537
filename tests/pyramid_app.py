"""A small Pyramid + ZODB application, as its users write them: pyramid_tm,
pyramid_zodbconn, pyramid_retry, a plain persistent root, and a security
policy that authenticates the user named in the X-User header."""
import transaction
from persistent import Persistent
from persistent.mapping import PersistentMapping
from pyramid.config import Configurator
from pyramid.view import view_config
from pyramid_zodbconn import get_connection
from ZODB.POSException import ConflictError

from cipher.background import current_connection
from cipher.background import current_user_id
from cipher.background import enqueue
from cipher.background import jobs
from cipher.background import BackgroundWorkerThread
from zope.component import hooks


class AppRoot(PersistentMapping):
    """The application's root: a plain persistent mapping, not a site."""


class Note(Persistent):
    def __init__(self, text):
        self.text = text
        self.done_by = None


def root_factory(request):
    root = get_connection(request).root()
    if 'app' not in root:
        root['app'] = AppRoot()
    return root['app']


class HeaderPolicy:
    """Pyramid 2 security policy: the user is the X-User header."""

    def identity(self, request):
        return request.headers.get('X-User')

    def authenticated_userid(self, request):
        return request.headers.get('X-User')

    def permits(self, request, context, permission):
        if permission == 'cipher.background.monitor':  # the monitor's
            return request.headers.get('X-User') == 'boss'
        return True

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


#: What each run of mark_done saw: (note text, user id, the zope site,
#: the unit's root is the connection's).
seen = []
#: Attempts of the 'flaky' view so far.
attempts = []


def mark_done(note):
    """The job: mark ``note`` done by the user the job runs for."""
    note.done_by = current_user_id()
    seen.append((note.text, current_user_id(), hooks.getSite(),
                 note._p_jar is current_connection()))


def count_in_root():
    """A job with no arguments: its site is the request's root."""
    root = current_connection().root()['app']
    root['count'] = root.get('count', 0) + 1
    seen.append(('count', current_user_id(), hooks.getSite(), None))


@view_config(route_name='add', renderer='json', request_method='POST')
def add(request):
    note = request.root[request.params['name']] = Note(
        request.params['name'])
    job_id = jobs.perform(mark_done, note)
    return {'job': job_id}


@view_config(route_name='count', renderer='json', request_method='POST')
def count(request):
    return {'job': jobs.perform(count_in_root)}


@view_config(route_name='enqueue', renderer='json', request_method='POST')
def enqueue_view(request):
    """A durable job, stored in the request's transaction; the request
    fails after it when asked to."""
    note = request.root[request.params['name']] = Note(
        request.params['name'])
    job_id = enqueue(mark_done, note)
    request.registry.durable_job = job_id
    if request.params.get('fail'):
        raise Failed('the view fails after enqueuing')
    return {'job': job_id}


class Failed(Exception):
    pass


@view_config(route_name='fail', request_method='POST')
def fail(request):
    note = request.root['failed'] = Note('failed')
    request.registry.failed_job = jobs.perform(mark_done, note)
    raise Failed('the view fails after asking for the job')


@view_config(route_name='flaky', renderer='json', request_method='POST')
def flaky(request):
    note = request.root['flaky'] = Note('flaky')
    attempts.append(jobs.perform(mark_done, note))
    if len(attempts) == 1:
        raise ConflictError('the first attempt conflicts')
    return {'jobs': list(attempts)}


class OneUnit(BackgroundWorkerThread):
    """A worker that marks the note 'worker' done, once."""

    def scheduleNextWork(self):
        return not getattr(self, 'done', False)

    def doWork(self):
        self.done = True
        site = current_connection().root()['app']
        site['worker'] = current_user_id()


@view_config(route_name='worker', renderer='json', request_method='POST')
def start_worker(request):
    worker = OneUnit.forSite(request.root)
    worker.startAfterCommit()
    request.registry.worker = worker
    return {'worker': worker.name}


@view_config(route_name='state', renderer='json')
def state(request):
    root = request.root
    return {name: getattr(value, 'done_by', value)
            for name, value in root.items()}


def make_app(uri, explicit=False, find_user=None):
    settings = {'zodbconn.uri': uri, 'retry.attempts': '2'}
    if explicit:
        settings['tm.manager_hook'] = 'pyramid_tm.explicit_manager'
    if find_user:
        settings['cipher.background.find_user'] = find_user
    with Configurator(settings=settings, root_factory=root_factory) as config:
        config.include('pyramid_retry')
        config.include('pyramid_tm')
        config.include('pyramid_zodbconn')
        config.include('cipher.background.pyramid')
        config.set_security_policy(HeaderPolicy())
        for name in ('add', 'count', 'fail', 'flaky', 'worker', 'enqueue'):
            config.add_route(name, '/' + name)
        config.add_route('state', '/')
        config.scan(__name__)
        return config.make_wsgi_app()


def find_user(user_id, site):
    """The application's own user lookup: users listed in the root."""
    return user_id if user_id in site.get('users', ('alice', 'bob')) \
        else None


def close(app):
    """Close the application's database (what a server does at exit)."""
    for db in app.registry._zodb_databases.values():
        db.close()
    transaction.abort()
