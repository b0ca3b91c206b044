// The task view (#/tasks/ID): one task's fields and attempt history (GET
// /tasks/{id}, read again on each of its events and after a gap in them),
// its output followed live (GET /tasks/{id}/output?follow=true: Server-Sent Events as
// the README's Live output section fixes them, read with fetch() to send the token),
// and Cancel (DELETE /tasks/{id}) and Retry (POST /tasks/{id}/retry)
// buttons, enabled as the status allows.
'use strict';

const LIVE = ['queued', 'scheduled', 'running'];

let tvID = '';
let tvTask = null;
let tvTimer = null;
let tvSeq = 0; // numbers task reads, so an older answer never overwrites a newer one
// follow is the output stream being read: {ctrl, id, attempt, ended,
// refollow ('now' or 'done' once the task's output is read again)}; null
// when none.
let follow = null;
// outputMissing is why live output cannot be read (an older master); the
// view then shows the task's stored output.
let outputMissing = '';

function tvShow(id) {
  if (id !== tvID) {
    stopFollow();
    tvID = id;
    tvTask = null;
    outputMissing = '';
    $('task-view').dataset.taskId = id;
    $('task-view').dataset.status = '';
    $('tv-id').textContent = id;
    $('tv-cmd').textContent = '';
    $('tv-fields').replaceChildren();
    $('tv-history-body').replaceChildren();
    $('tv-error').hidden = true;
    clearOutput();
  }
  loadTask();
}

function tvHide() {
  // An open follow holds one of the master's MASTER_MAX_EVENT_STREAMS places.
  stopFollow();
}

async function loadTask() {
  const id = tvID, seq = ++tvSeq;
  let t;
  try {
    t = await api('/tasks/' + encodeURIComponent(id));
  } catch (e) {
    if (id === tvID && seq === tvSeq) showError(e.status === 404 ? 'no task ' + id + ' (finished tasks are deleted after MASTER_RETENTION)' : e.message, true);
    return;
  }
  if (id !== tvID || seq !== tvSeq) return;
  // A read that failed (a 401 before the token was entered) is over once
  // one works; a refused Cancel or Retry stays told.
  if ($('tv-error').dataset.load === 'true') $('tv-error').hidden = true;
  tvTask = t;
  renderTask(t);
  if (outputMissing) {
    // Stored output only: what the task has when it ends or between attempts.
    setOutput('stdout', t.stdout || '');
    setOutput('stderr', t.stderr || '');
  } else if (!follow && !$('view-task').hidden && !(FINAL.includes(t.status) && $('tv-output').dataset.ended === 'true')) {
    // Not once the view is left (tvHide closed its follow): the answer
    // may come after.
    startFollow(id);
  }
}

function loadTaskSoon() {
  if (tvTimer) return;
  tvTimer = setTimeout(() => { tvTimer = null; if (tvID && !$('view-task').hidden) loadTask(); }, 200);
}

function renderTask(t) {
  const view = $('task-view');
  view.dataset.status = t.status;
  statusPill($('tv-status'), t.status);
  $('tv-cmd').textContent = t.cmd;
  $('tv-cancel').disabled = !LIVE.includes(t.status);
  $('tv-retry').disabled = !FINAL.includes(t.status);
  const f = $('tv-fields');
  f.replaceChildren();
  const add = (k, v) => {
    if (v === null || v === undefined || v === '') return;
    f.append(el('span', '', k), el('span', '', String(v)));
  };
  add('Worker', t.worker_id);
  add('Attempts', t.attempts + ' of ' + (t.max_attempts + (t.attempt_base || 0)));
  add('Exit code', t.exit_code);
  add('Error', t.error);
  add('Waiting for', t.waiting_for);
  add('Priority', t.priority);
  add('Requires', labelText(t.requires));
  add('Timeout', t.timeout);
  add('Retry on', (t.retry_on || []).join(', '));
  add('Run at', t.run_at && when(t.run_at));
  add('Created', when(t.created_at));
  add('Started', t.started_at && when(t.started_at));
  add('Finished', t.finished_at && when(t.finished_at));
  add('Ran', t.started_at && seconds(between(t.started_at, t.finished_at)) + (t.finished_at ? '' : ' so far'));
  add('Idempotency key', t.idempotency_key);
  const hb = $('tv-history-body');
  hb.replaceChildren();
  for (const h of t.history || []) {
    const tr = document.createElement('tr');
    tr.dataset.attempt = String(h.attempt);
    tr.dataset.outcome = h.outcome;
    tr.dataset.worker = h.worker_id || '';
    cell(tr, String(h.attempt));
    cell(tr, h.worker_id || '—');
    const o = cell(tr, '');
    statusPill(o.appendChild(el('span')), h.outcome);
    if (h.duplicate) o.appendChild(el('span', 'muted', ' duplicate'));
    cell(tr, h.exit_code === null || h.exit_code === undefined ? '—' : String(h.exit_code));
    cell(tr, when(h.assigned_at), 'muted');
    cell(tr, seconds(between(h.assigned_at, h.finished_at)) + (h.finished_at ? '' : ' …'));
    hb.appendChild(tr);
  }
  if (!(t.history || []).length) {
    const tr = document.createElement('tr');
    const td = cell(tr, 'not run yet', 'muted');
    td.colSpan = 6;
    hb.appendChild(tr);
  }
}

// showError shows msg above the task; load tells that reading the task
// failed, which the next read that works takes back.
function showError(msg, load) {
  $('tv-error').textContent = msg;
  $('tv-error').dataset.load = String(!!load);
  $('tv-error').hidden = false;
}

// Output -------------------------------------------------------------------

function clearOutput() {
  $('tv-stdout').replaceChildren();
  $('tv-stderr').replaceChildren();
  $('tv-notes').replaceChildren();
  $('tv-output').dataset.attempt = '';
  $('tv-output').dataset.ended = 'false';
  $('tv-output').dataset.following = 'false';
  $('tv-output-state').textContent = '';
}

function setOutput(stream, text) {
  const pre = $('tv-' + stream);
  if (pre.textContent !== text) pre.textContent = text;
}

// note tells of an event of the output stream (data-event names it, for
// tests), above the output.
function note(event, text, cls, outcome) {
  const p = el('p', 'note ' + (cls || ''), text);
  p.dataset.event = event;
  if (outcome) p.dataset.outcome = outcome;
  $('tv-notes').appendChild(p);
}

// appendOutput adds text to a stream's pane, and keeps the pane scrolled to
// the end if it was there.
function appendOutput(stream, node) {
  const pre = $('tv-' + stream);
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.appendChild(node);
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

function skippedNode(bytes) {
  return el('span', 'skip', '[… ' + bytes + ' bytes not shown …]\n');
}

function stopFollow() {
  if (follow) follow.ctrl.abort();
  follow = null;
  $('tv-output').dataset.following = 'false';
}

function outputEvent(f, type, data) {
  let d;
  try { d = JSON.parse(data); } catch (e) { return; }
  const out = $('tv-output');
  switch (type) {
    case 'attempt':
      if (f.attempt && d.attempt !== f.attempt) {
        // A re-run starts its output from the start.
        $('tv-stdout').replaceChildren();
        $('tv-stderr').replaceChildren();
      }
      f.attempt = d.attempt;
      out.dataset.attempt = String(d.attempt);
      $('tv-output-state').textContent = 'attempt ' + d.attempt + (d.worker_id ? ' on ' + d.worker_id : '') + ', following live';
      note('attempt', 'attempt ' + d.attempt + ' started' + (d.worker_id ? ' on ' + d.worker_id : ''));
      break;
    case 'output': {
      if (f.attempt && d.attempt !== f.attempt) return;
      // The master sends each part of a stream once per connection and
      // tells what it leaves out with 'skipped'. Its offsets cannot be
      // compared with the text had: live ones count the raw bytes, which
      // the text has as U+FFFD (3 bytes) where they are not UTF-8, and the
      // stored output's count its text.
      const s = d.stream === 'stderr' ? 'stderr' : 'stdout';
      appendOutput(s, document.createTextNode(d.text));
      break;
    }
    case 'skipped': {
      const s = d.stream === 'stderr' ? 'stderr' : 'stdout';
      appendOutput(s, skippedNode(d.bytes));
      break;
    }
    case 'attempt_end':
      note('attempt_end', 'attempt ' + d.attempt + (d.worker_id ? ' on ' + d.worker_id : '') + ' ended: ' + d.outcome +
        (d.detail ? ' (' + d.detail + ')' : '') + '; the task runs again', 'warn', d.outcome);
      loadTaskSoon();
      break;
    case 'end':
      if (f.attempt && d.attempt && d.attempt !== f.attempt && !f.refollow) {
        // A late result of a delivery given up decided the task, not the
        // one shown: its output went when its replacement started, and
        // the master sends before end only what of it this follow had not
        // had. A follow of the final task sends all of it.
        f.refollow = 'now';
        return;
      }
      f.ended = true;
      out.dataset.ended = 'true';
      $('tv-output-state').textContent = 'attempt ' + (f.attempt || d.attempt) + ': ' + d.status +
        (d.exit_code === null || d.exit_code === undefined ? '' : ', exit ' + d.exit_code) +
        (d.stdout_truncated || d.stderr_truncated ? ' (output truncated)' : '');
      if (d.error) note('end', d.error, 'warn', d.status);
      loadTaskSoon();
      break;
  }
}

// startFollow reads the task's output stream until the task ends, and
// again from the start when the connection drops before that.
async function startFollow(id) {
  const f = { ctrl: new AbortController(), id, attempt: 0, ended: false };
  follow = f;
  const out = $('tv-output');
  out.dataset.following = 'true';
  while (follow === f && !f.ended) {
    let retryMs = 1000;
    if (!f.attempt) $('tv-output-state').textContent = tvTask && LIVE.includes(tvTask.status) && !tvTask.history?.length ?
      'waiting for the first attempt' : 'connecting…';
    try {
      const resp = await fetch('/tasks/' + encodeURIComponent(id) + '/output?follow=true',
        { headers: authHeaders(), cache: 'no-store', signal: f.ctrl.signal });
      if (resp.ok && resp.body) {
        // Each connection streams the output from the start.
        $('tv-stdout').replaceChildren();
        $('tv-stderr').replaceChildren();
        $('tv-notes').replaceChildren();
        f.attempt = 0;
        await readSSE(resp, (type, data) => { if (follow === f) outputEvent(f, type, data); });
        if (f.refollow === 'now') { f.refollow = 'done'; retryMs = 0; }
      } else if (resp.status === 429) {
        const s = parseInt(resp.headers.get('Retry-After'), 10);
        retryMs = (s > 0 ? s : 2) * 1000;
        $('tv-output-state').textContent = 'too many streams open on the master; retrying in ' + retryMs / 1000 + ' s';
      } else {
        const body = await resp.json().catch(() => ({}));
        if (resp.status === 401) setConn('unauthorized', 'API token needed');
        if (resp.status === 404 || resp.status === 405 || resp.status === 400) {
          // The task exists (GET /tasks/{id} answered), so the master has
          // no output endpoint: show the stored output instead.
          outputMissing = body.error || String(resp.status);
          break;
        }
        $('tv-output-state').textContent = 'output: ' + (body.error || resp.status);
        retryMs = 3000;
      }
    } catch (e) {
      if (f.ctrl.signal.aborted) return;
    }
    if (follow !== f || f.ended) break;
    await new Promise((r) => setTimeout(r, retryMs));
  }
  if (follow === f) {
    follow = null;
    out.dataset.following = 'false';
  }
  if (outputMissing && tvID === id) {
    $('tv-output-state').textContent = 'the stored output: this master has no live output (' + outputMissing + ')';
    loadTask();
  }
}

// Buttons ------------------------------------------------------------------

async function act(button, method, path, what) {
  $('tv-error').hidden = true;
  button.disabled = true;
  try {
    await api(path, { method });
    if (what === 'retry') {
      // A retried task runs again: follow its new attempt from the start.
      stopFollow();
      clearOutput();
    }
  } catch (e) {
    showError(what + ' failed: ' + e.message);
  }
  loadTask();
}

function startTaskView() {
  $('tv-cancel').addEventListener('click', () => act($('tv-cancel'), 'DELETE', '/tasks/' + encodeURIComponent(tvID), 'cancel'));
  $('tv-retry').addEventListener('click', () => act($('tv-retry'), 'POST', '/tasks/' + encodeURIComponent(tvID) + '/retry', 'retry'));
  // A gap names no task, but the events missed may have been this one's.
  onEvent((e) => { if ((e.type === 'gap' || (e.task_id && e.task_id === tvID)) && !$('view-task').hidden) loadTaskSoon(); });
  onConnect(() => { if (tvID && !$('view-task').hidden) loadTask(); });
  addView('task', { show: tvShow, hide: tvHide });
  // A live task's run time counts up between its events.
  setInterval(() => { if (tvTask && tvTask.id === tvID && LIVE.includes(tvTask.status) && !$('view-task').hidden) renderTask(tvTask); }, 1000);
}
