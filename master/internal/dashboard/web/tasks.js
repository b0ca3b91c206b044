// Tasks: a table of tasks, newest first, from GET /tasks with its filters
// (status, worker, cmd: a text the command contains), paged with the API's
// next_cursor. While shown it follows the event stream: a row's status
// changes at once, and the page is read again shortly after (coalesced), so
// new tasks appear and rows that no longer match the filters go.
'use strict';

const TASKS_PAGE = 50;
// pages[i] is the cursor of page i ('' for the newest); page is the one shown.
let pages = [''];
let page = 0;
let nextCursor = null;
let tasksSeq = 0; // numbers the requests, so an older answer never overwrites a newer one
let tasksTimer = null;
let cmdTimer = null;

// The status an event moves a task to.
const EVENT_STATUS = {
  'task.queued': 'queued', 'task.retried': 'queued', 'task.requeued': 'queued', 'task.scheduled': 'scheduled',
  'task.assigned': 'running', 'task.canceled': 'canceled',
};

function tasksQuery() {
  const q = new URLSearchParams({ limit: String(TASKS_PAGE) });
  const status = $('filter-status').value, worker = $('filter-worker').value, cmd = $('filter-cmd').value.trim();
  if (status) q.set('status', status);
  if (worker) q.set('worker', worker);
  if (cmd) q.set('cmd', cmd);
  if (pages[page]) q.set('cursor', pages[page]);
  return q;
}

async function loadTasks() {
  const seq = ++tasksSeq;
  const q = tasksQuery();
  let body;
  try {
    body = await api('/tasks?' + q.toString());
  } catch (e) {
    if (seq !== tasksSeq) return;
    $('tasks-error').textContent = e.message;
    $('tasks-error').hidden = false;
    return;
  }
  if (seq !== tasksSeq) return;
  $('tasks-error').hidden = true;
  nextCursor = body.next_cursor;
  const tbody = $('tasks-body');
  tbody.replaceChildren();
  for (const t of body.tasks) tbody.appendChild(taskRow(t));
  $('tasks-empty').hidden = body.tasks.length > 0;
  $('tasks-older').disabled = !nextCursor;
  $('tasks-newest').disabled = page === 0;
  $('tasks-page').textContent = 'page ' + (page + 1) + (nextCursor ? '' : ' (the last)');
  const filtered = q.has('status') || q.has('worker') || q.has('cmd');
  $('tasks-info').textContent = body.tasks.length + (filtered ? ' matching' : '') + ' task' + (body.tasks.length === 1 ? '' : 's') +
    (page === 0 ? ', newest first, live' : ', newest first');
  $('tasks-section').dataset.query = q.toString();
}

function taskRow(t) {
  const tr = document.createElement('tr');
  tr.dataset.taskId = t.id;
  tr.dataset.status = t.status;
  tr.dataset.worker = t.worker_id || '';
  const id = cell(tr, '', 'id');
  const a = el('a', '', shortID(t.id));
  a.href = '#/tasks/' + encodeURIComponent(t.id);
  a.title = t.id;
  id.appendChild(a);
  const c = cell(tr, '', 'cmd');
  c.appendChild(el('code', '', t.cmd));
  c.title = t.cmd;
  statusPill(cell(tr, '').appendChild(el('span')), t.status).classList.add('status');
  cell(tr, t.worker_id || '—', 'worker');
  cell(tr, t.attempts + ' / ' + (t.max_attempts + (t.attempt_base || 0)), 'attempts');
  cell(tr, when(t.created_at), 'muted');
  const ran = t.started_at ? seconds(between(t.started_at, t.finished_at)) : '';
  cell(tr, t.status === 'running' ? ran + ' …' : ran, 'ran');
  tr.addEventListener('click', (ev) => {
    if (ev.target.closest('a')) return; // the link navigates by itself
    openTask(t.id);
  });
  return tr;
}

// tasksSoon reads the page again shortly; a burst of events asks once.
function tasksSoon(ms) {
  if (tasksTimer) return;
  tasksTimer = setTimeout(() => { tasksTimer = null; loadTasks(); }, ms === undefined ? 400 : ms);
}

function tasksEvent(e) {
  if ($('view-tasks').hidden) return;
  // Events were missed, of tasks on any page: read the one shown again.
  if (e.type === 'gap') { tasksSoon(); return; }
  if (!e.task_id) return;
  const status = e.type === 'task.finished' ? e.status : EVENT_STATUS[e.type];
  if (!status) return;
  const tr = document.querySelector('#tasks-body tr[data-task-id="' + CSS.escape(e.task_id) + '"]');
  if (tr) {
    tr.dataset.status = status;
    statusPill(tr.querySelector('.status'), status).classList.add('status');
    if (e.worker_id && e.type === 'task.assigned') {
      tr.dataset.worker = e.worker_id;
      tr.querySelector('.worker').textContent = e.worker_id;
    }
  }
  // New tasks appear on the first page only: later pages hold older tasks.
  if (tr || page === 0) tasksSoon();
}

// tasksWorkersChanged refreshes the worker filter's choices: every worker
// the page has met, the selected one kept.
function tasksWorkersChanged() {
  const sel = $('filter-worker');
  const have = new Set([...sel.options].map((o) => o.value));
  const ids = [...workersSeen].sort();
  if (ids.every((id) => have.has(id))) return;
  const keep = sel.value;
  sel.replaceChildren(new Option('any', ''));
  for (const id of ids) sel.appendChild(new Option(id, id));
  sel.value = keep;
}

function filtersChanged() {
  pages = [''];
  page = 0;
  loadTasks();
}

function startTasks() {
  $('filter-status').addEventListener('change', filtersChanged);
  $('filter-worker').addEventListener('change', filtersChanged);
  $('filter-cmd').addEventListener('input', () => {
    clearTimeout(cmdTimer);
    cmdTimer = setTimeout(filtersChanged, 250); // one request per pause in typing
  });
  $('tasks-filter').addEventListener('submit', (ev) => { ev.preventDefault(); filtersChanged(); });
  $('tasks-older').addEventListener('click', () => {
    if (!nextCursor) return;
    pages = pages.slice(0, page + 1);
    pages.push(nextCursor);
    page++;
    loadTasks();
  });
  $('tasks-newest').addEventListener('click', () => { pages = ['']; page = 0; loadTasks(); });
  onEvent(tasksEvent);
  onConnect(() => { if (!$('view-tasks').hidden) loadTasks(); });
  addView('tasks', { show: () => { tasksWorkersChanged(); loadTasks(); } });
}
