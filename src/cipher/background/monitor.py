"""The monitor: a WSGI application that shows the workers and the jobs of
this process and of durable queues, to people as pages and to scripts
as JSON.

Routes, under wherever the application is mounted:

=====================  =================================================
``GET /``              the overview page (workers, jobs per state)
``GET /overview.json`` ``{"counts", "finished_per_minute", "workers"}``
``GET /jobs``          the job list page (``?state=&name=&limit=``)
``GET /jobs.json``     ``{"jobs": [job, ...]}``, newest first
``GET /job/ID``        a job's page
``GET /job/ID.json``   the job, with its details where the viewer may
                       see them
``POST /job/ID/cancel``    cancel it
``POST /job/ID/requeue``   run a finished durable job again
``POST /worker/NAME/stop`` stop a worker of this process
``GET /static/NAME``   the pages' style sheet and script
=====================  =================================================

Nobody is trusted for being able to reach it.  ``viewer(environ)`` (the
host's authentication: the Zope view, the Pyramid route, the standalone
command's token) tells who asks, as a :class:`Viewer`; None is answered
401.  A viewer with the monitor permission sees every job in full, the
workers, and may act on all of them; any other viewer sees the counts
and, of the jobs, only their own: their arguments' outcome (result,
error, traceback, output, progress data) belongs to the principal who
started them.  Every action is a POST carrying the viewer's CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``), which the pages
hold; a POST without it is refused (403) before anything is done.
"""
import dataclasses
import datetime
import hashlib
import hmac
import json
import math
import mimetypes
import os
import secrets
import urllib.parse

from ZODB.POSException import ReadOnlyError

from cipher.background import _monitorpages as pages
from cipher.background import jobs
from cipher.background import jobstore as states
from cipher.background.durable import DurableJobs
from cipher.background.durable import is_durable_id
from cipher.background.durable import requeue
from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import BackgroundError
from cipher.background.jobruntime import get_job_store
from cipher.background.thread import workers

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'monitor_static')
#: How many of the newest finished jobs the sparkline counts, per source.
SPARKLINE_JOBS = 500
#: Minutes the sparkline of finished jobs covers.
SPARKLINE_MINUTES = 30


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Who looks: ``principal`` (a principal id, or None for someone known
    only by a token) and whether they hold the monitor permission."""

    principal: str = None
    monitor: bool = False


class _Response(Exception):
    """Ends a request with ``status`` and a short text (or a redirect)."""

    def __init__(self, status, text='', location=None):
        super().__init__(text)
        self.status, self.text, self.location = status, text, location


class MonitorApp:
    """The monitor as a WSGI application.

    ``viewer(environ)`` returns the :class:`Viewer` asking, or None.
    ``queues`` are the durable queues shown beside this process's job
    store (:class:`~cipher.background.durable.DurableJobs`, or databases,
    whose default queue is meant).  ``site`` (a path, such as
    ``'/plone'``) limits it to the jobs of that site, for a monitor
    mounted on a site whose users and managers are its own: the monitor
    permission then covers that site's jobs, and no worker is shown.
    ``secret`` (bytes) signs the CSRF tokens: give every process behind
    one address the same one; by default each application makes its own.
    """

    def __init__(self, viewer, queues=(), secret=None, title=None,
                 site=None):
        if not callable(viewer):
            raise ArgumentTypeError(
                'viewer must be a callable taking the WSGI environ and '
                'returning a Viewer or None, not %r' % (viewer,))
        self.viewer = viewer
        self.queues = [queue if isinstance(queue, DurableJobs)
                       else DurableJobs(queue) for queue in queues]
        if secret is not None and not isinstance(secret, bytes):
            raise ArgumentTypeError('secret must be bytes, not %r'
                                    % (type(secret).__name__,))
        self.secret = secret or secrets.token_bytes(32)
        self.title = title or 'Background work'
        if site is not None and not isinstance(site, str):
            raise ArgumentTypeError('site must be the path of a site (a '
                                    'str) or None for all, not %r' % (site,))
        self.site = site

    # -- WSGI --

    def __call__(self, environ, start_response):
        try:
            status, headers, body = self._dispatch(environ)
        except _Response as response:
            status = response.status
            headers = [('Content-Type', 'text/plain; charset=utf-8')]
            if response.location:
                headers.append(('Location', response.location))
            body = response.text.encode('utf-8')
        headers += [('Cache-Control', 'no-store'),
                    ('X-Content-Type-Options', 'nosniff'),
                    ('X-Frame-Options', 'DENY'),
                    ('Content-Security-Policy',
                     "default-src 'self'; img-src 'self' data:; "
                     "frame-ancestors 'none'")]
        headers.append(('Content-Length', str(len(body))))
        start_response(status, headers)
        if environ.get('REQUEST_METHOD') == 'HEAD':
            return [b'']
        return [body]

    def _dispatch(self, environ):
        path = environ.get('PATH_INFO') or '/'
        method = environ.get('REQUEST_METHOD', 'GET')
        if path.startswith('/static/') and method in ('GET', 'HEAD'):
            return self._static(path[len('/static/'):])
        viewer = self.viewer(environ)
        if viewer is None:
            raise _Response('401 Unauthorized',
                            'log in to see the background work')
        if not isinstance(viewer, Viewer):
            raise TypeError('the viewer callable returned %r, not a Viewer '
                            'or None' % (viewer,))
        request = _Request(environ, viewer, self._token(viewer))
        parts = path.split('/')[1:]  # PATH_INFO is decoded already
        if method == 'POST':
            request.check_token()
            return self._action(request, parts)
        if method not in ('GET', 'HEAD'):
            raise _Response('405 Method Not Allowed', 'use GET or POST')
        if parts in ([''], []):
            return self._page(pages.overview(self._overview(request),
                                             request, self.title))
        if parts == ['overview.json']:
            return self._json(self._overview(request))
        if parts == ['jobs']:
            return self._page(pages.job_list(self._jobs(request), request,
                                             self.title))
        if parts == ['jobs.json']:
            return self._json(self._jobs(request))
        if len(parts) == 2 and parts[0] == 'job':
            if parts[1].endswith('.json'):
                return self._json(self._job(request, parts[1][:-5]))
            return self._page(pages.job_page(self._job(request, parts[1]),
                                             request, self.title))
        raise _Response('404 Not Found', 'no such page')

    # -- what the pages show --

    def _listings(self):
        return [get_job_store()] + self.queues

    def _overview(self, request):
        counts = {}
        finished = []
        for listing in self._listings():
            for state, count in listing.counts(site=self.site).items():
                counts[state] = counts.get(state, 0) + count
            finished += [status.finished for status in listing.list(
                state=states.FINAL_STATES, limit=SPARKLINE_JOBS,
                site=self.site) if status.finished is not None]
        overview = {'counts': counts,
                    'finished_per_minute': _per_minute(finished),
                    'csrf_token': request.token,
                    'viewer': {'principal': request.viewer.principal,
                               'monitor': request.viewer.monitor}}
        overview['workers'] = [_worker(worker) for worker in workers()] \
            if self._sees_workers(request.viewer) else []
        return overview

    def _jobs(self, request):
        query = request.query
        try:
            limit = int(query.get('limit') or 100)
        except ValueError:
            raise _Response('400 Bad Request', 'limit must be a whole number')
        state = [s for s in query.get('state', '').split(',') if s] or None
        principal = query.get('principal') or None
        if not request.viewer.monitor:
            principal = request.viewer.principal
            if principal is None:
                return {'jobs': []}
        found = []
        for listing in self._listings():
            try:
                found += listing.list(state=state, principal=principal,
                                      name=query.get('name') or None,
                                      limit=limit, site=self.site)
            except BackgroundError as exc:
                raise _Response('400 Bad Request', str(exc))
        found.sort(key=lambda status: status.created or _EPOCH,
                   reverse=True)
        return {'jobs': [_job(status, request.viewer, details=False)
                         for status in found[:limit]]}

    def _find(self, job_id):
        for listing in self._listings():
            status = listing.get(job_id)
            if status.state != states.UNKNOWN and (
                    self.site is None or status.site == self.site):
                return listing, status
        raise _Response('404 Not Found', 'no job %s is known here' % job_id)

    def _sees_workers(self, viewer):
        """Workers belong to the process: shown to the monitor permission
        of a monitor that is not limited to one site."""
        return viewer.monitor and self.site is None

    def _job(self, request, job_id):
        _, status = self._find(job_id)
        if not _may_see(request.viewer, status):
            raise _Response('403 Forbidden', 'job %s is not yours' % job_id)
        job = _job(status, request.viewer, details=True)
        job['durable'] = is_durable_id(job_id)
        return job

    # -- actions --

    def _action(self, request, parts):
        if len(parts) == 3 and parts[0] == 'job' and \
                parts[2] in ('cancel', 'requeue'):
            job_id = parts[1]
            _, status = self._find(job_id)
            if not _may_see(request.viewer, status):
                raise _Response('403 Forbidden',
                                'job %s is not yours' % job_id)
            if parts[2] == 'cancel':
                done = _act(jobs.cancel, job_id)
            elif not is_durable_id(job_id):
                raise _Response('409 Conflict', 'only a durable job can be '
                                'run again; this one was not stored')
            elif status.state == states.OUTCOME_UNKNOWN and \
                    not request.viewer.monitor:
                raise _Response('403 Forbidden', 'whether this job committed '
                                'is unknown: running it again may apply it '
                                'twice, which takes the monitor permission')
            else:
                done = _act(requeue, job_id)
            return self._answer(request, {'job': job_id, 'action': parts[2],
                                          'done': bool(done)},
                                'job/' + urllib.parse.quote(job_id, safe=''))
        if len(parts) == 3 and parts[0] == 'worker' and parts[2] == 'stop':
            if not self._sees_workers(request.viewer):
                raise _Response('403 Forbidden', 'stopping a worker takes '
                                'the monitor permission')
            for worker in workers():
                if worker.name == parts[1]:
                    worker.stop(timeout=0)
                    return self._answer(request, {
                        'worker': worker.name, 'action': 'stop',
                        'done': True}, '')
            raise _Response('404 Not Found', 'no worker %s' % parts[1])
        raise _Response('404 Not Found', 'no such action')

    def _answer(self, request, result, page):
        """JSON for scripts, a redirect to ``page`` for a form."""
        if 'application/json' in request.environ.get('HTTP_ACCEPT', ''):
            return self._json(result)
        raise _Response('303 See Other', 'done', request.url(page))

    # -- responses --

    def _json(self, data):
        body = json.dumps(data, default=_jsonable, sort_keys=True,
                          allow_nan=False).encode()
        return '200 OK', [('Content-Type', 'application/json')], body

    def _page(self, html):
        return '200 OK', [('Content-Type', 'text/html; charset=utf-8')], \
            html.encode('utf-8')

    def _static(self, name):
        if name not in os.listdir(STATIC):
            raise _Response('404 Not Found', 'no such file')
        with open(os.path.join(STATIC, name), 'rb') as f:
            body = f.read()
        kind = mimetypes.guess_type(name)[0] or 'application/octet-stream'
        return '200 OK', [('Content-Type', kind)], body

    def _token(self, viewer):
        who = '%s|%s' % (viewer.principal or '', int(viewer.monitor))
        return hmac.new(self.secret, who.encode('utf-8'),
                        hashlib.sha256).hexdigest()


class _Request:
    """What a request brings: the viewer, the query, the form."""

    def __init__(self, environ, viewer, token):
        self.environ, self.viewer, self.token = environ, viewer, token
        self.query = dict(urllib.parse.parse_qsl(
            environ.get('QUERY_STRING', '')))
        self.root = environ.get('SCRIPT_NAME', '').rstrip('/') + '/'

    def url(self, path):
        return self.root + path

    def form(self):
        try:
            size = int(self.environ.get('CONTENT_LENGTH') or 0)
        except ValueError:
            size = 0
        body = self.environ['wsgi.input'].read(min(size, 64 * 1024))
        return dict(urllib.parse.parse_qsl(body.decode('utf-8', 'replace')))

    def check_token(self):
        given = self.environ.get('HTTP_X_CSRF_TOKEN') or \
            self.form().get('csrf_token', '')
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise _Response('403 Forbidden', 'the form is stale or forged '
                            '(no valid csrf_token): load the page again')


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _may_see(viewer, status):
    """True when ``viewer`` may see the details of ``status``'s job."""
    return viewer.monitor or (status.principal is not None
                              and status.principal == viewer.principal)


def _job(status, viewer, details):
    """The JSON of a job; its outcome only for those who may see it."""
    job = {'id': status.id, 'name': status.name, 'state': status.state,
           'progress': _number(status.progress), 'attempts': status.attempts,
           'cancel_requested': status.cancel_requested,
           'created': status.created, 'started': status.started,
           'finished': status.finished, 'principal': status.principal,
           'done': status.done}
    if details and _may_see(viewer, status):
        job.update(progress_data=_short(status.progress_data),
                   result=_short(status.result), error=status.error,
                   traceback=status.traceback, output=status.output)
    return job


def _worker(worker):
    status = worker.status
    return {'name': worker.name, 'state': status.state,
            'units_done': status.units_done,
            'units_failed': status.units_failed,
            'conflicts_retried': status.conflicts_retried,
            'units_outcome_unknown': status.units_outcome_unknown,
            'last_error': status.last_error,
            'last_error_time': status.last_error_time,
            'started': status.started, 'last_run': status.last_run}


def _per_minute(times, minutes=SPARKLINE_MINUTES):
    """How many of ``times`` fall in each of the last ``minutes`` minutes,
    oldest first."""
    now = datetime.datetime.now(datetime.timezone.utc)
    counts = [0] * minutes
    for moment in times:
        age = int((now - moment).total_seconds() // 60)
        if 0 <= age < minutes:
            counts[minutes - 1 - age] += 1
    return counts


def _act(action, job_id):
    """``action(job_id)``; a failure is a clear 503, never half an answer
    (the job is as it was: the queue's transactions commit or not)."""
    try:
        return action(job_id)
    except ReadOnlyError:
        raise _Response('503 Service Unavailable', 'the database is open '
                        'read-only here: nothing can be changed')
    except Exception as exc:
        raise _Response('503 Service Unavailable', 'could not do it, try '
                        'again: %s: %s' % (type(exc).__name__, exc))


def _number(value):
    """A progress for JSON: a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _short(value, limit=2000):
    """A value for JSON: itself when it is plain, else its repr, cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:limit]
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return repr(value)
