// The monitor's pages refresh themselves from the JSON endpoints every
// 1.5 s: states, progress bars, counts, a job's output.  Data is put in
// with textContent and DOM methods only, never as HTML.
(function () {
  'use strict';
  var body = document.body;
  var root = body.dataset.root, poll = body.dataset.poll;
  var csrf = body.dataset.csrf, page = body.dataset.page;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function badge(state) { return el('span', {'class': 'state state-' + state}, state); }
  // Moving without a value while the job runs and reported none;
  // nothing for a job that does not run and has none.
  function bar(value, state) {
    if (typeof value !== 'number' && state !== 'running' && state !== 'retrying') {
      return document.createTextNode('');
    }
    var node = el('progress', {max: '100'});
    if (typeof value === 'number') { node.value = value; node.textContent = value + '%'; }
    return node;
  }
  function when(text) { return text ? text.slice(0, 19).replace('T', ' ') : ''; }
  function form(action, label) {
    var f = el('form', {method: 'post', action: root + action});
    f.appendChild(el('input', {type: 'hidden', name: 'csrf_token', value: csrf}));
    f.appendChild(el('button', {}, label));
    return f;
  }
  function jobRow(job) {
    var id = encodeURIComponent(job.id);
    var tr = el('tr', {'data-id': job.id});
    var cells = [badge(job.state), el('a', {href: root + 'job/' + id}, job.name),
                 document.createTextNode(job.principal || ''), bar(job.progress, job.state),
                 document.createTextNode(when(job.created)),
                 document.createTextNode(when(job.finished)),
                 job.done ? document.createTextNode('') : form('job/' + id + '/cancel', 'Cancel')];
    cells.forEach(function (cell) { var td = el('td'); td.appendChild(cell); tr.appendChild(td); });
    return tr;
  }
  function setCell(field, node) {
    var td = document.querySelector('td[data-field="' + field + '"]');
    if (td) { td.textContent = ''; td.appendChild(node); }
  }
  var update = {
    jobs: function (data) {
      var tbody = document.getElementById('jobs');
      tbody.textContent = '';
      data.jobs.forEach(function (job) { tbody.appendChild(jobRow(job)); });
      document.querySelector('.empty').hidden = data.jobs.length > 0;
    },
    job: function (job) {
      setCell('state', badge(job.state));
      setCell('progress', bar(job.progress, job.state));
      setCell('finished', document.createTextNode(when(job.finished)));
      setCell('started', document.createTextNode(when(job.started)));
      setCell('attempts', document.createTextNode(job.attempts));
      ['output', 'result', 'error', 'traceback'].forEach(function (name) {
        var node = document.getElementById(name);
        if (node && job[name] !== undefined) {
          var text = job[name] === null ? '' : String(job[name]);
          node.textContent = name === 'output' ? text.slice(-10000) : text;
        }
      });
      if (job.done) {
        var actions = document.querySelector('.actions form[action$="/cancel"]');
        if (actions) actions.remove();
      }
    },
    overview: function (data) {
      var tbody = document.querySelector('table.counts tbody');
      var order = Array.prototype.map.call(
        document.querySelectorAll('.legend .state'), function (node) { return node.textContent; });
      var rows = order.filter(function (state) { return data.counts[state]; });
      if (!rows.length) return;
      tbody.textContent = '';
      rows.forEach(function (state) {
        var tr = el('tr'), first = el('td'), count = el('td', {'class': 'count', 'data-state': state}, data.counts[state]);
        first.appendChild(badge(state));
        tr.appendChild(first); tr.appendChild(count); tbody.appendChild(tr);
      });
    }
  };
  function refresh() {
    fetch(poll, {headers: {Accept: 'application/json'}, credentials: 'same-origin'})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) update[page](data); })
      .catch(function () {})
      .then(function () { window.setTimeout(refresh, 1500); });
  }
  if (poll && update[page]) window.setTimeout(refresh, 1500);
}());
