// Roundhouse dashboard: workers from GET /workers, what waits from
// GET /queue, the live stream from GET /events, tasks through POST /tasks.
// Every request carries the API token, when one was entered; EventSource
// cannot send headers, so the event stream is read with fetch() and parsed
// here.
'use strict';

const TOKEN_KEY = 'roundhouse.token';
const MAX_EVENTS = 300;

const $ = (id) => document.getElementById(id);
// From 0 at first, so the page starts with the events the master still
// keeps; afterwards from the last one seen.
let lastEventId = '0';
let seenEvents = false;
let streamAbort = null;
let refreshTimer = null;

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const tok = sessionStorage.getItem(TOKEN_KEY);
  if (tok) h['Authorization'] = 'Bearer ' + tok;
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  const resp = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers), cache: 'no-store' }));
  if (resp.status === 401) {
    setConn('unauthorized', 'API token needed');
    throw new Error('unauthorized: enter the API token (MASTER_API_TOKEN) above');
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || resp.status + ' ' + resp.statusText);
  return body;
}

function setConn(state, text) {
  const el = $('conn-status');
  el.dataset.state = state;
  el.textContent = text || state;
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? '' : d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

// when is clock(t), with the date when t is not today: a run time may be
// days away.
function when(t) {
  const d = new Date(t);
  return isNaN(d) || d.toDateString() === new Date().toDateString() ? clock(t) : d.toLocaleDateString() + ' ' + clock(t);
}

function ago(t) {
  const s = Math.max(0, (Date.now() - new Date(t)) / 1000);
  return s < 1 ? 'now' : s < 60 ? Math.round(s) + 's ago' : Math.round(s / 60) + 'm ago';
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

// labelText writes a label set as the master does (labels.String): sorted
// "k=v,k=v", so equal sets read the same and serve as a selector.
function labelText(set) {
  return Object.keys(set || {}).sort().map((k) => k + '=' + set[k]).join(',');
}

// Workers ------------------------------------------------------------------

async function refreshWorkers() {
  let body;
  try {
    body = await api('/workers');
  } catch (e) {
    return;
  }
  const tbody = $('workers-body');
  tbody.replaceChildren();
  let next = null;
  body.workers.forEach((w, i) => {
    const tr = document.createElement('tr');
    tr.dataset.workerId = w.id;
    tr.dataset.state = w.state;
    tr.dataset.next = String(!!w.next);
    tr.dataset.labels = labelText(w.labels);
    cell(tr, String(i + 1));
    cell(tr, w.id, 'worker-id');
    const labels = cell(tr, '', 'labels');
    for (const l of tr.dataset.labels ? tr.dataset.labels.split(',') : []) {
      const chip = document.createElement('span');
      chip.className = 'label';
      chip.textContent = l;
      labels.appendChild(chip);
    }
    cell(tr, w.state, 'state-' + w.state);
    cell(tr, String(w.slots), 'slots');
    cell(tr, String(w.running), 'running');
    cell(tr, String(w.completed), 'completed');
    cell(tr, ago(w.last_seen), 'muted');
    cell(tr, w.next ? '◀ next task' : '', 'next');
    tbody.appendChild(tr);
    if (w.next) next = w.id;
  });
  $('worker-count').textContent = String(body.workers.length);
  $('workers-empty').hidden = body.workers.length > 0;
  $('next-info').textContent = body.workers.length === 0 ? '' :
    next ? 'The next task goes to ' + next + '.' : 'Every worker is busy or draining: the next task waits in the queue.';
}

// Queue --------------------------------------------------------------------

// refreshQueue shows the counts of GET /queue, and flags the groups of
// tasks no connected worker can run: they wait until one with their labels
// joins, and nothing else would tell.
async function refreshQueue() {
  let q;
  try {
    q = await api('/queue');
  } catch (e) {
    return;
  }
  $('queue-queued').textContent = String(q.queued);
  $('queue-scheduled').textContent = String(q.scheduled);
  for (const td of document.querySelectorAll('#queue-priorities td[data-priority]')) {
    td.textContent = String(q.by_priority[td.dataset.priority] || 0);
  }
  $('queue-next-run').textContent = q.next_run_at ? 'The next scheduled task is due at ' + when(q.next_run_at) + '.' : '';
  const list = $('waiting-list');
  list.replaceChildren();
  for (const g of q.groups) {
    if (!g.waiting_for) continue;
    const li = document.createElement('li');
    li.dataset.requires = labelText(g.requires);
    li.dataset.queued = String(g.queued);
    const count = document.createElement('span');
    count.className = 'pill count';
    count.textContent = String(g.queued);
    count.title = 'queued tasks that need ' + (li.dataset.requires || 'any worker');
    const why = document.createElement('span');
    why.className = 'why';
    why.textContent = g.waiting_for;
    li.append(count, why);
    list.appendChild(li);
  }
  $('waiting-empty').hidden = list.children.length > 0;
  $('queue-section').dataset.waiting = String(list.children.length > 0);
}

// refreshSoon coalesces the refreshes a burst of events asks for.
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refreshWorkers(); refreshQueue(); }, 150);
}

// Events -------------------------------------------------------------------

function describe(e) {
  switch (e.type) {
    case 'task.queued': return (e.reason === 'due' ? 'due: ' : '') + (e.cmd || '') + scheduling(e);
    case 'task.scheduled': return 'runs at ' + when(e.run_at) + (e.reason ? ' (' + e.reason + ')' : '') +
      (e.detail ? ': ' + e.detail : e.cmd ? ': ' + e.cmd + scheduling(e) : '');
    case 'task.retried': return 'retried by hand: a new attempt';
    case 'task.assigned': return 'attempt ' + e.attempt + (e.reason ? ' (' + e.reason + ')' :
      e.wait_seconds !== undefined ? ', waited ' + e.wait_seconds.toFixed(3) + 's' : '');
    case 'task.finished': return e.status + (e.exit_code !== undefined ? ', exit ' + e.exit_code : '') +
      (e.run_seconds !== undefined ? ', ran ' + e.run_seconds.toFixed(3) + 's' : '') + (e.reason ? ' (' + e.reason + ')' : '');
    case 'task.requeued': return (e.reason || '') + (e.detail ? ': ' + e.detail : '');
    case 'task.canceled': return 'canceled';
    case 'worker.joined': return e.slots + ' slot(s), position ' + ((e.position || 0) + 1);
    case 'worker.draining': return 'takes no new tasks, ' + (e.running || 0) + ' running';
    case 'worker.left': case 'worker.timed_out': return (e.reason || '') + (e.detail ? ': ' + e.detail : '');
    case 'gap': return 'missed some events; reloaded the workers';
    default: return '';
  }
}

// scheduling is what a task asks of the scheduler beyond the defaults
// (priority 3, any worker).
function scheduling(e) {
  const requires = labelText(e.requires);
  return (e.priority && e.priority !== 3 ? ' · priority ' + e.priority : '') + (requires ? ' · needs ' + requires : '');
}

function showEvent(e) {
  const li = document.createElement('li');
  li.dataset.type = e.type;
  if (e.seq) li.dataset.seq = String(e.seq);
  if (e.task_id) li.dataset.taskId = e.task_id;
  if (e.worker_id) li.dataset.workerId = e.worker_id;
  if (e.status) li.dataset.status = e.status;
  if (e.run_at) li.dataset.runAt = e.run_at;
  const add = (text, cls, title) => {
    const s = document.createElement('span');
    s.textContent = text;
    if (cls) s.className = cls;
    if (title) s.title = title;
    li.appendChild(s);
  };
  add(clock(e.time || Date.now()), 'time');
  add(e.type, 'type');
  // UUIDv7s share their leading (time) digits: the tail tells tasks apart.
  add(e.task_id ? '…' + e.task_id.slice(-8) : '', 'task', e.task_id);
  add(e.worker_id || '', 'worker');
  add(describe(e), 'detail');
  const list = $('event-list');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function handleBlock(block) {
  let id = '', type = 'message', data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue; // a comment: the heartbeat
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'id') id = value;
    else if (field === 'event') type = value;
    else if (field === 'data') data += (data ? '\n' : '') + value;
  }
  if (!data) return;
  if (id) lastEventId = id;
  let e;
  try { e = JSON.parse(data); } catch (err) { return; }
  e.type = e.type || type;
  // On the first load older events being gone is no news.
  if (e.type !== 'gap' || seenEvents) showEvent(e);
  if (id) seenEvents = true;
  if (e.type.startsWith('worker.') || e.type.startsWith('task.') || e.type === 'gap') {
    refreshSoon();
  }
}

async function streamEvents() {
  for (;;) {
    streamAbort = new AbortController();
    let retryMs = 2000;
    try {
      const headers = authHeaders();
      if (lastEventId) headers['Last-Event-ID'] = lastEventId;
      const resp = await fetch('/events', { headers, cache: 'no-store', signal: streamAbort.signal });
      if (resp.status === 401) {
        setConn('unauthorized', 'API token needed');
      } else if (resp.ok && resp.body) {
        setConn('live', 'live');
        refreshWorkers();
        refreshQueue();
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            handleBlock(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
        setConn('reconnecting', 'reconnecting…');
      } else if (resp.status === 429) {
        // The master serves as many streams as MASTER_MAX_EVENT_STREAMS
        // allows; wait as long as it asks before taking a place again.
        setConn('reconnecting', 'events: too many streams open, retrying');
        const s = parseInt(resp.headers.get('Retry-After'), 10);
        if (s > 0) retryMs = s * 1000;
      } else {
        setConn('reconnecting', 'events: ' + resp.status);
      }
    } catch (err) {
      if (!streamAbort.signal.aborted) setConn('reconnecting', 'reconnecting…');
    }
    await new Promise((r) => setTimeout(r, streamAbort.signal.aborted ? 0 : retryMs));
  }
}

// Tasks --------------------------------------------------------------------

function showTask(t) {
  $('task-result').hidden = false;
  $('task-result').dataset.taskId = t.id;
  $('task-result').dataset.status = t.status;
  $('task-id').textContent = t.id;
  const st = $('task-status');
  st.textContent = t.status;
  st.className = 'pill status-' + t.status;
  $('task-worker').textContent = t.worker_id || '—';
  $('task-exit').textContent = t.exit_code === null || t.exit_code === undefined ? '—' : String(t.exit_code);
  $('task-stdout').textContent = t.stdout || '';
  $('task-stderr').textContent = t.stderr || '';
}

const FINAL = ['succeeded', 'failed', 'timed_out', 'canceled'];
// Each request waits at most 1s for the task to finish, then the page asks
// again: 1s is the smallest MASTER_MAX_WAIT a master accepts, so no master
// refuses it with a 400, and a task that ends answers at once anyway.
const WAIT = '1s';

async function submitTask(ev) {
  ev.preventDefault();
  const err = $('submit-error');
  err.hidden = true;
  const cmd = $('cmd-input').value;
  const button = $('submit-button');
  button.disabled = true;
  try {
    let t = await api('/tasks?wait=' + WAIT, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ cmd }),
    });
    showTask(t);
    while (!FINAL.includes(t.status)) {
      t = await api('/tasks/' + encodeURIComponent(t.id) + '?wait=' + WAIT);
      showTask(t);
    }
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  } finally {
    button.disabled = false;
  }
}

// Start --------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('token-input').value = sessionStorage.getItem(TOKEN_KEY) || '';
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const tok = $('token-input').value.trim();
    if (tok) sessionStorage.setItem(TOKEN_KEY, tok); else sessionStorage.removeItem(TOKEN_KEY);
    setConn('connecting', 'connecting…');
    if (streamAbort) streamAbort.abort(); // reconnect with the new token
    refreshWorkers();
    refreshQueue();
  });
  $('submit-form').addEventListener('submit', submitTask);
  refreshWorkers();
  refreshQueue();
  setInterval(() => { refreshWorkers(); refreshQueue(); }, 5000); // last-seen times, and a safety net
  streamEvents();
});
