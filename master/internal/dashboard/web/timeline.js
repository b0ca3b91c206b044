// Timeline: one lane per worker in rotation order, each attempt (one
// delivery of a task) a bar from task.assigned to the event that ended it
// (task.finished, task.requeued, task.canceled, or task.scheduled for a
// retry), coloured by outcome, over a scrolling window. A lost delivery
// ends in a ✕ and its re-run appears on another lane. Drawn as SVG built
// with the DOM (the CSP allows no inline styles; attributes are fine), so
// tests find bars as
// [data-lane="W"] [data-task="ID"][data-attempt="N"][data-outcome="lost"].
'use strict';

// The window shown is chosen on the page (30 s to 5 min); bars are kept for
// the longest, so a wider choice shows them at once.
let tlWindowMs = 120 * 1000;
const TL_KEEP_MS = 300 * 1000;
const TL_LABEL_W = 150; // the lane names' column
const TL_LANE_H = 26;
const TL_AXIS_H = 22;
const SVG_NS = 'http://www.w3.org/2000/svg';

// rotation is the connected workers' IDs in rotation order (GET /workers);
// gone holds the workers that left, with when, whose lanes stay while they
// have bars in the window.
let rotation = [];
const gone = new Map(); // worker ID -> time it left (ms)
// bars by "taskID/attempt": {task, attempt, worker, start, end (null while
// open), outcome, lost, cmd}.
const bars = new Map();
const cmds = new Map(); // task ID -> {cmd, t: when it was seen}, from task.queued, for titles
let tlDrawPending = false;

function evTime(e) {
  const t = e.time ? new Date(e.time).getTime() : NaN;
  return isNaN(t) ? Date.now() : t;
}

// timelineWorkers takes the rotation from GET /workers.
function timelineWorkers(workers) {
  const now = Date.now();
  const was = rotation;
  rotation = workers.map((w) => w.id);
  // An answer can cross a worker.left event; a worker missing from it left.
  for (const id of was) if (!rotation.includes(id) && !gone.has(id)) gone.set(id, now);
  for (const id of rotation) gone.delete(id);
  timelineSoon();
}

function openBars(taskID) {
  const out = [];
  for (const b of bars.values()) if (b.task === taskID && b.end === null) out.push(b);
  return out;
}

// endBar closes attempt n of a task, or the open attempts of it without n.
function endBar(e, outcome, lost) {
  const t = evTime(e);
  let list = [];
  if (e.attempt) {
    const b = bars.get(e.task_id + '/' + e.attempt);
    if (b) list = [b];
  } else {
    list = openBars(e.task_id);
  }
  for (const b of list) {
    if (b.end === null || b.end > t) b.end = t;
    b.outcome = outcome;
    b.lost = b.lost || lost;
    if (e.reason) b.reason = e.reason;
  }
  return list.length > 0;
}

function timelineEvent(e) {
  const t = evTime(e);
  switch (e.type) {
    case 'task.queued': case 'task.scheduled':
      if (e.cmd) cmds.set(e.task_id, { cmd: e.cmd, t });
      if (e.type === 'task.scheduled' && e.reason === 'retry' && e.attempt) endBar(e, e.status || 'failed', false);
      break;
    case 'task.assigned': {
      const key = e.task_id + '/' + e.attempt;
      const b = bars.get(key);
      if (b) {
        // Reclaimed: the worker came back still running it; the bar goes on,
        // and is no lost delivery after all, though a task.requeued may have
        // ended it so (a worker that timed out came back before another
        // worker took the task).
        b.worker = e.worker_id;
        b.end = null;
        b.outcome = 'running';
        b.lost = false;
        delete b.reason;
      } else {
        bars.set(key, { task: e.task_id, attempt: e.attempt, worker: e.worker_id, start: t, end: null, outcome: 'running', lost: false });
      }
      break;
    }
    case 'task.finished': {
      // A delivery given up on as the last attempt ends the task failed:
      // the delivery was lost all the same.
      const lost = e.reason === 'out_of_attempts';
      const outcome = lost ? 'lost' : e.status;
      if (!endBar(e, outcome, lost) && e.attempt && e.run_seconds !== undefined) {
        // Assigned before the kept history: its start is known from its run time.
        bars.set(e.task_id + '/' + e.attempt, { task: e.task_id, attempt: e.attempt, worker: e.worker_id,
          start: t - e.run_seconds * 1000, end: t, outcome, lost });
      }
      // The task is decided: the master kills every other delivery of it
      // still running (a worker that came back with one it had replaced),
      // and no event tells of those again.
      for (const b of openBars(e.task_id)) {
        b.end = t;
        b.outcome = 'canceled';
      }
      break;
    }
    case 'task.requeued': endBar(e, 'lost', true); break;
    case 'task.canceled': endBar({ task_id: e.task_id, time: e.time }, 'canceled', false); break;
    case 'worker.joined':
      gone.delete(e.worker_id);
      if (!rotation.includes(e.worker_id)) rotation.push(e.worker_id);
      break;
    case 'worker.left':
      rotation = rotation.filter((id) => id !== e.worker_id);
      gone.set(e.worker_id, t);
      break;
    case 'gap': reconcile(); return;
    default: return;
  }
  timelineSoon();
}

// reconcile asks the master about the open bars after a gap in the events
// (a restarted master, a reader too far behind): their ends may be among
// the events missed. A bar whose attempt has ended takes its outcome and
// time from the task's history.
async function reconcile() {
  const open = [...bars.values()].filter((b) => b.end === null).slice(0, 100);
  for (const b of open) {
    let t;
    try {
      t = await api('/tasks/' + encodeURIComponent(b.task));
    } catch (e) {
      if (e.status === 404) bars.delete(b.task + '/' + b.attempt);
      continue;
    }
    const h = (t.history || []).find((a) => a.attempt === b.attempt);
    if (h && h.outcome !== 'running' && b.end === null) {
      b.end = h.finished_at ? new Date(h.finished_at).getTime() : Date.now();
      b.outcome = h.outcome;
      b.lost = h.outcome === 'lost';
    }
  }
  timelineSoon();
}

function timelineSoon() {
  if (tlDrawPending) return;
  tlDrawPending = true;
  requestAnimationFrame(() => { tlDrawPending = false; timelineDraw(); });
}

function svg(tag, attrs, parent) {
  const n = document.createElementNS(SVG_NS, tag);
  for (const k in attrs) n.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(n);
  return n;
}

// lanes is the rotation, then the workers that left or are known only from
// the history and still have bars in the window, longest gone last.
function lanes(from) {
  const out = rotation.slice();
  const extra = new Set();
  for (const b of bars.values()) {
    if (b.worker && !out.includes(b.worker) && (b.end === null || b.end >= from)) extra.add(b.worker);
  }
  const left = [...extra].sort((a, b) => (gone.get(b) || 0) - (gone.get(a) || 0));
  return out.concat(left);
}

// timelinePrune forgets the bars that ended before the longest window, the
// workers gone with them, and the commands of tasks with no bar left. It
// runs whichever view is shown: a tab left on another one keeps no more.
function timelinePrune(now) {
  const keep = now - TL_KEEP_MS;
  for (const [k, b] of bars) if (b.end !== null && b.end < keep) bars.delete(k);
  const withBars = new Set(), workers = new Set();
  for (const b of bars.values()) { withBars.add(b.task); workers.add(b.worker); }
  for (const [id, t] of gone) if (t < keep && !workers.has(id)) gone.delete(id);
  for (const [id, c] of cmds) if (c.t < keep && !withBars.has(id)) cmds.delete(id);
}

function timelineDraw() {
  const now = Date.now();
  timelinePrune(now);
  const box = $('timeline-box');
  if ($('view-overview').hidden || !box) return;
  const from = now - tlWindowMs;

  const ids = lanes(from);
  const w = Math.max(400, box.clientWidth);
  const h = ids.length * TL_LANE_H + TL_AXIS_H;
  const root = $('timeline');
  root.setAttribute('width', w);
  root.setAttribute('height', h);
  root.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
  root.replaceChildren();
  $('timeline-empty').hidden = ids.length > 0;
  root.dataset.lanes = ids.join(',');

  const plotW = w - TL_LABEL_W - 8;
  const x = (t) => TL_LABEL_W + ((t - from) / tlWindowMs) * plotW;

  // The time axis: a line and a clock label about every 100 px.
  const axis = svg('g', { class: 'axis' }, root);
  const step = [5, 10, 15, 30, 60].map((s) => s * 1000).find((s) => (s / tlWindowMs) * plotW >= 90) || 60000;
  const firstTick = Math.ceil(from / step) * step;
  for (let t = firstTick; t <= now; t += step) {
    svg('line', { x1: x(t), x2: x(t), y1: 0, y2: h - TL_AXIS_H + 4, class: 'tick' }, axis);
    const lbl = svg('text', { x: x(t), y: h - 6, 'text-anchor': 'middle' }, axis);
    lbl.textContent = new Date(t).toLocaleTimeString([], { hour12: false });
  }
  svg('line', { x1: x(now), x2: x(now), y1: 0, y2: h - TL_AXIS_H + 4, class: 'now' }, axis);

  ids.forEach((id, i) => {
    const y = i * TL_LANE_H;
    const lane = svg('g', { class: 'lane' + (rotation.includes(id) ? '' : ' gone') }, root);
    lane.dataset.lane = id;
    lane.dataset.position = String(i);
    svg('rect', { x: 0, y: y + 1, width: w, height: TL_LANE_H - 2, class: 'lane-bg' }, lane);
    const name = svg('text', { x: 6, y: y + TL_LANE_H / 2 + 4, class: 'lane-name' }, lane);
    name.textContent = rotation.includes(id) ? (i + 1) + '. ' + id : id + ' (left)';
    for (const b of bars.values()) {
      if (b.worker !== id) continue;
      const end = b.end === null ? now : b.end;
      if (end < from) continue;
      drawBar(lane, b, Math.max(x(b.start), TL_LABEL_W), x(end), y, !rotation.includes(id) && b.end === null);
    }
  });
}

function drawBar(lane, b, x0, x1, y, adrift) {
  const g = svg('g', { class: 'bar o-' + b.outcome + (adrift ? ' adrift' : '') }, lane);
  g.dataset.task = b.task;
  g.dataset.attempt = String(b.attempt);
  g.dataset.outcome = b.outcome;
  const bw = Math.max(3, x1 - x0);
  svg('rect', { x: x0, y: y + 5, width: bw, height: TL_LANE_H - 10, rx: 2 }, g);
  const title = svg('title', {}, g);
  const ran = seconds(((b.end === null ? Date.now() : b.end) - b.start) / 1000);
  title.textContent = 'task ' + b.task + (cmds.has(b.task) ? ' (' + cmds.get(b.task).cmd + ')' : '') +
    '\nattempt ' + b.attempt + ' on ' + b.worker + ': ' + b.outcome + (b.reason ? ' (' + b.reason + ')' : '') +
    (b.end === null ? ', running for ' : ', ran ') + ran + (adrift ? '\nits worker left: waiting for it to come back' : '');
  if (bw > 90) {
    const t = svg('text', { x: x0 + 4, y: y + TL_LANE_H / 2 + 4, class: 'bar-label' }, g);
    t.textContent = shortID(b.task) + ' #' + b.attempt;
  }
  if (b.lost) {
    // The ✕ at the end: the worker went away with the delivery.
    const cx = x0 + bw, cy = y + TL_LANE_H / 2, r = 5;
    svg('path', { d: `M${cx - r} ${cy - r}L${cx + r} ${cy + r}M${cx - r} ${cy + r}L${cx + r} ${cy - r}`, class: 'mark' }, g);
  }
  g.addEventListener('click', () => openTask(b.task));
}

function startTimeline() {
  $('timeline-range').addEventListener('change', () => {
    tlWindowMs = parseInt($('timeline-range').value, 10) * 1000;
    timelineDraw();
  });
  tlWindowMs = parseInt($('timeline-range').value, 10) * 1000;
  onEvent(timelineEvent);
  setInterval(timelineDraw, 1000);
  window.addEventListener('resize', timelineDraw);
}
