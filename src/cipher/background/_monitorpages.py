"""The monitor's pages: HTML made from the same data as its JSON.

Every value is escaped; the pages hold no inline script or style (the
monitor's Content-Security-Policy allows neither): the script
``monitor_static/monitor.js`` finds what it needs in ``data-``
attributes and refreshes the page from the JSON endpoints.
"""
import html
import urllib.parse

RUNNING = ('running', 'retrying')
#: The states in the legend, in the order a job goes through them.
LEGEND = ('pending-commit', 'queued', 'running', 'retrying', 'succeeded',
          'failed', 'cancelled', 'dropped', 'interrupted', 'outcome-unknown')


def _e(value):
    return html.escape('' if value is None else str(value), quote=True)


def _time(value):
    if value is None:
        return ''
    return _e(value.strftime('%Y-%m-%d %H:%M:%S'))


def _layout(request, title, page, body, poll):
    root = request.url('')
    viewer = request.viewer
    who = viewer.principal or 'token holder'
    if viewer.monitor:
        who += ' (monitor)'
    return '''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%(title)s</title>
<link rel="stylesheet" href="%(root)sstatic/monitor.css">
<script src="%(root)sstatic/monitor.js" defer></script>
</head>
<body data-page="%(page)s" data-root="%(root)s" data-poll="%(poll)s"
      data-csrf="%(token)s">
<header>
<h1><a href="%(root)s">%(title)s</a></h1>
<nav><a href="%(root)s">Overview</a> <a href="%(root)sjobs">Jobs</a></nav>
<p class="viewer">%(who)s</p>
</header>
<main>
%(body)s
</main>
<footer>%(legend)s</footer>
</body>
</html>
''' % dict(title=_e(title), root=_e(root), page=page, poll=_e(poll),
           token=_e(request.token), who=_e(who), body=body,
           legend=legend())


def legend():
    return '<ul class="legend">%s</ul>' % ''.join(
        '<li>%s</li>' % badge(state) for state in LEGEND)


def badge(state):
    return '<span class="state state-%s">%s</span>' % (_e(state), _e(state))


def progress(value, state):
    """A progress bar: moving without a value while the job runs and has
    reported none, nothing for a job that does not run and has none."""
    if value is None:
        return '<progress max="100"></progress>' if state in RUNNING else ''
    return '<progress max="100" value="%s">%s%%</progress>' % (
        _e(value), _e(value))


def sparkline(counts, width=240, height=40):
    """An SVG line of ``counts`` (jobs finished per minute)."""
    top = max(counts) or 1
    step = width / max(1, len(counts) - 1)
    points = ' '.join('%.1f,%.1f' % (i * step, height - 2 - (height - 4)
                                     * count / top)
                      for i, count in enumerate(counts))
    return ('<svg class="sparkline" viewBox="0 0 %d %d" width="%d" '
            'height="%d" role="img" aria-label="jobs finished per minute, '
            'last %d minutes: %s"><polyline points="%s"/></svg>' % (
                width, height, width, height, len(counts),
                _e(', '.join(str(c) for c in counts)), points))


def overview(data, request, title):
    counts = data['counts']
    rows = ''.join('<tr><td>%s</td><td class="count" data-state="%s">%d'
                   '</td></tr>' % (badge(state), _e(state),
                                   counts.get(state, 0))
                   for state in LEGEND if counts.get(state))
    body = ['<section><h2>Jobs</h2>',
            '<table class="counts"><tbody>%s</tbody></table>' % (
                rows or '<tr><td>No jobs yet.</td></tr>'),
            '<p>Finished per minute, last %d minutes: %s</p>' % (
                len(data['finished_per_minute']),
                sparkline(data['finished_per_minute'])),
            '<p><a href="%sjobs">All jobs</a></p></section>'
            % _e(request.url(''))]
    if request.viewer.monitor:
        body.append(_workers(data['workers'], request))
    return _layout(request, title, 'overview', '\n'.join(body),
                   request.url('overview.json'))


def _workers(workers, request):
    if not workers:
        return '<section><h2>Workers</h2><p>No worker runs.</p></section>'
    rows = []
    for worker in workers:
        stop = _form(request, 'worker/%s/stop' % urllib.parse.quote(
            worker['name'], safe=''), 'Stop')
        rows.append(
            '<tr><td>%s</td><td>%s</td><td class="n">%d</td>'
            '<td class="n">%d</td><td class="n">%d</td><td>%s</td>'
            '<td>%s</td></tr>' % (
                _e(worker['name']), _e(worker['state']),
                worker['units_done'], worker['units_failed'],
                worker['conflicts_retried'], _e(worker['last_error'] or ''),
                stop))
    return ('<section><h2>Workers</h2><div class="scroll"><table>'
            '<thead><tr><th>Name</th><th>State</th><th>Done</th>'
            '<th>Failed</th><th>Conflicts</th><th>Last error</th><th></th>'
            '</tr></thead><tbody>%s</tbody></table></div></section>'
            % ''.join(rows))


def _form(request, action, label):
    return ('<form method="post" action="%s"><input type="hidden" '
            'name="csrf_token" value="%s"><button>%s</button></form>' % (
                _e(request.url(action)), _e(request.token), _e(label)))


def job_list(data, request, title):
    query = request.query
    rows = ''.join(job_row(job, request) for job in data['jobs'])
    filters = (
        '<form class="filters" method="get" action="%s">'
        '<label>State <input name="state" value="%s" '
        'placeholder="failed,running"></label> '
        '<label>Name <input name="name" value="%s"></label> '
        '<button>Filter</button></form>' % (
            _e(request.url('jobs')), _e(query.get('state', '')),
            _e(query.get('name', ''))))
    body = ('<section><h2>Jobs</h2>%s<div class="scroll"><table class="jobs">'
            '<thead><tr><th>State</th><th>Job</th><th>By</th>'
            '<th>Progress</th><th>Created</th><th>Finished</th><th></th>'
            '</tr></thead><tbody id="jobs">%s</tbody></table></div>'
            '<p class="empty"%s>No jobs.</p></section>' % (
                filters, rows, ' hidden' if rows else ''))
    poll = request.url('jobs.json')
    if request.environ.get('QUERY_STRING'):
        poll += '?' + request.environ['QUERY_STRING']
    return _layout(request, title, 'jobs', body, poll)


def job_row(job, request):
    link = request.url('job/%s' % urllib.parse.quote(job['id'], safe=''))
    cancel = '' if job['done'] else _form(
        request, 'job/%s/cancel' % urllib.parse.quote(job['id'], safe=''),
        'Cancel')
    return ('<tr data-id="%s"><td>%s</td><td><a href="%s">%s</a></td>'
            '<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
            '</tr>' % (_e(job['id']), badge(job['state']), _e(link),
                       _e(job['name']), _e(job['principal']),
                       progress(job['progress'], job['state']),
                       _time(job['created']),
                       _time(job['finished']), cancel))


def job_page(job, request, title):
    quoted = urllib.parse.quote(job['id'], safe='')
    actions = []
    if not job['done']:
        actions.append(_form(request, 'job/%s/cancel' % quoted, 'Cancel'))
    elif job['durable'] and (job['state'] in ('failed', 'cancelled') or (
            job['state'] == 'outcome-unknown' and request.viewer.monitor)):
        actions.append(_form(request, 'job/%s/requeue' % quoted,
                             'Run again'))
    fields = [('State', badge(job['state'])),
              ('Progress', progress(job['progress'], job['state'])),
              ('Started by', _e(job['principal'])),
              ('Attempts', _e(job['attempts'])),
              ('Created', _time(job['created'])),
              ('Started', _time(job['started'])),
              ('Finished', _time(job['finished']))]
    if 'result' in job:
        fields += [('Progress data', _e(job['progress_data'])),
                   ('Result', '<code id="result">%s</code>'
                    % _e(job['result'])),
                   ('Error', '<span id="error">%s</span>' % _e(job['error']))]
    rows = ''.join('<tr><th>%s</th><td data-field="%s">%s</td></tr>' % (
        name, name.lower().replace(' ', '-'), value)
        for name, value in fields)
    parts = ['<section><h2>%s</h2><p class="id">%s</p>' % (
                 _e(job['name']), _e(job['id'])),
             '<table class="job"><tbody>%s</tbody></table>' % rows,
             '<div class="actions">%s</div>' % ''.join(actions)]
    if job.get('traceback'):
        parts.append('<h3>Traceback</h3><pre id="traceback">%s</pre>'
                     % _e(job['traceback']))
    if 'output' in job:
        parts.append('<h3>Output</h3><pre id="output">%s</pre>'
                     % _e(job['output'][-10000:]))
    parts.append('</section>')
    return _layout(request, title, 'job', '\n'.join(parts),
                   request.url('job/%s.json' % quoted))
