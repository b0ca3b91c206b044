// Overview: the workers in rotation order (GET /workers), what waits
// (GET /queue), the live event list, and a form that runs a command. The
// timeline and the rate charts take their worker and queue figures from
// here, so the page polls each endpoint once.
'use strict';

const MAX_EVENTS = 300;
let refreshTimer = null;
// workersSeen is every worker ID the page has met, for the task filter.
const workersSeen = new Set();

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
    workersSeen.add(w.id);
    const tr = document.createElement('tr');
    tr.dataset.workerId = w.id;
    tr.dataset.state = w.state;
    tr.dataset.next = String(!!w.next);
    tr.dataset.labels = labelText(w.labels);
    cell(tr, String(i + 1));
    cell(tr, w.id, 'worker-id');
    const labels = cell(tr, '', 'labels');
    for (const l of tr.dataset.labels ? tr.dataset.labels.split(',') : []) {
      labels.appendChild(el('span', 'label', l));
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
  timelineWorkers(body.workers);
  chartSample('workers', body.workers.length);
  tasksWorkersChanged();
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
  chartSample('queue', q.queued);
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
    const count = el('span', 'pill count', String(g.queued));
    count.title = 'queued tasks that need ' + (li.dataset.requires || 'any worker');
    li.append(count, el('span', 'why', g.waiting_for));
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
  li.appendChild(el('span', 'time', clock(e.time || Date.now())));
  li.appendChild(el('span', 'type', e.type));
  if (e.task_id) {
    const a = el('a', 'task', shortID(e.task_id));
    a.href = '#/tasks/' + encodeURIComponent(e.task_id);
    a.title = e.task_id;
    li.appendChild(a);
  } else {
    li.appendChild(el('span', 'task', ''));
  }
  li.appendChild(el('span', 'worker', e.worker_id || ''));
  li.appendChild(el('span', 'detail', describe(e)));
  const list = $('event-list');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function overviewEvent(e) {
  if (e.worker_id) workersSeen.add(e.worker_id);
  showEvent(e);
  if (e.type.startsWith('worker.') || e.type.startsWith('task.') || e.type === 'gap') refreshSoon();
}

// The command form ---------------------------------------------------------

function showTask(t) {
  $('task-result').hidden = false;
  $('task-result').dataset.taskId = t.id;
  $('task-result').dataset.status = t.status;
  $('task-id').textContent = t.id;
  $('task-link').href = '#/tasks/' + encodeURIComponent(t.id);
  const st = $('task-status');
  st.textContent = t.status;
  st.className = 'pill status-' + t.status;
  $('task-worker').textContent = t.worker_id || '—';
  $('task-exit').textContent = t.exit_code === null || t.exit_code === undefined ? '—' : String(t.exit_code);
  $('task-stdout').textContent = t.stdout || '';
  $('task-stderr').textContent = t.stderr || '';
}

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

function startOverview() {
  $('submit-form').addEventListener('submit', submitTask);
  onEvent(overviewEvent);
  onConnect(() => { refreshWorkers(); refreshQueue(); });
  refreshWorkers();
  refreshQueue();
  // Last-seen times, the queue-depth chart, and a safety net.
  setInterval(refreshWorkers, 5000);
  setInterval(refreshQueue, 2000);
  addView('overview', { show: () => { timelineDraw(); chartsDraw(); } });
}
