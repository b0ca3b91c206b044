// Roundhouse dashboard, the core the other scripts build on: the API token
// and requests, an SSE reader over fetch() (EventSource cannot send the
// Authorization header), the event stream from GET /events handed to every
// view that listens, and the router between the views (#/, #/tasks,
// #/tasks/ID). Each view lives in its own script: overview.js (workers,
// queue, the command form, the event list), charts.js (rates), timeline.js,
// tasks.js (the task table), taskview.js (one task, its output); start.js
// wires them up.
'use strict';

const TOKEN_KEY = 'roundhouse.token';
const FINAL = ['succeeded', 'failed', 'timed_out', 'canceled'];

const $ = (id) => document.getElementById(id);

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const tok = sessionStorage.getItem(TOKEN_KEY);
  if (tok) h['Authorization'] = 'Bearer ' + tok;
  return h;
}

// api sends a request with the token and returns the JSON body, or throws
// an Error with the master's message (its {"error": ...}) and the status.
async function api(path, opts) {
  opts = opts || {};
  const resp = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers), cache: 'no-store' }));
  if (resp.status === 401) {
    setConn('unauthorized', 'API token needed');
    throw new Error('unauthorized: enter the API token (MASTER_API_TOKEN) above');
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(body.error || resp.status + ' ' + resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function setConn(state, text) {
  const el = $('conn-status');
  el.dataset.state = state;
  el.textContent = text || state;
}

// Formatting -----------------------------------------------------------------

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

// seconds writes a duration in seconds for people: 0.042s, 3.1s, 2m05s.
function seconds(s) {
  if (s === null || s === undefined || isNaN(s)) return '';
  if (s < 10) return s.toFixed(s < 1 ? 3 : 1) + 's';
  if (s < 60) return Math.round(s) + 's';
  const m = Math.floor(s / 60);
  return m + 'm' + String(Math.round(s - m * 60)).padStart(2, '0') + 's';
}

// between is the time from a to b (or to now without b), in seconds.
function between(a, b) {
  if (!a) return null;
  return ((b ? new Date(b) : Date.now()) - new Date(a)) / 1000;
}

// shortID is the tail of a task ID: UUIDv7s share their leading (time)
// digits, so the tail tells tasks apart.
function shortID(id) {
  return id ? '…' + id.slice(-8) : '';
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function statusPill(e, status) {
  e.textContent = status ? status.replace('_', ' ') : '';
  e.className = 'pill status-' + status;
  return e;
}

// labelText writes a label set as the master does (labels.String): sorted
// "k=v,k=v", so equal sets read the same and serve as a selector.
function labelText(set) {
  return Object.keys(set || {}).sort().map((k) => k + '=' + set[k]).join(',');
}

// Server-Sent Events over fetch --------------------------------------------

// readSSE reads an SSE response body and calls onEvent(type, data, id) for
// each event; comments (heartbeats) are skipped. It returns when the body
// ends; an abort or a network error throws.
async function readSSE(resp, onEvent, onChunk) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    if (onChunk) onChunk();
    buf += value.replace(/\r\n?/g, '\n');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let id = '', type = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const j = line.indexOf(':');
        const field = j < 0 ? line : line.slice(0, j);
        let v = j < 0 ? '' : line.slice(j + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'id') id = v;
        else if (field === 'event') type = v;
        else if (field === 'data') data += (data ? '\n' : '') + v;
      }
      if (data) onEvent(type, data, id);
    }
  }
}

// The event stream ------------------------------------------------------------

// From 0 at first, so the page starts with the events the master still
// keeps (the timeline and the rates draw the recent past from them);
// afterwards from the last one seen.
let lastEventId = '0';
let seenEvents = false;
let streamAbort = null;
const eventListeners = [];

// silentMs is how long the event stream may stay silent before it is taken
// for dead: three of the master's heartbeats (one every 15 s). A laptop that
// slept, or a NAT that forgot the connection, leaves a stream that is
// never told it ended; it is dropped and opened again from the last event
// seen, rather than shown "live" with nothing coming.
let silentMs = 45000;

// onEvent registers fn(e) for every event of GET /events, the kept history
// first: listeners place events by their time, not by when they arrive.
function onEvent(fn) {
  eventListeners.push(fn);
}

function handleEvent(type, data, id) {
  if (id) lastEventId = id;
  let e;
  try { e = JSON.parse(data); } catch (err) { return; }
  e.type = e.type || type;
  // On the first load older events being gone is no news.
  if (e.type === 'gap' && !seenEvents) return;
  if (id) seenEvents = true;
  for (const fn of eventListeners) {
    try { fn(e); } catch (err) { console.error('event listener', err); }
  }
}

async function streamEvents() {
  for (;;) {
    const abort = new AbortController();
    streamAbort = abort;
    let retryMs = 2000;
    let silence = 0, silent = false;
    try {
      const headers = authHeaders();
      if (lastEventId) headers['Last-Event-ID'] = lastEventId;
      const resp = await fetch('/events', { headers, cache: 'no-store', signal: abort.signal });
      if (resp.status === 401) {
        setConn('unauthorized', 'API token needed');
      } else if (resp.ok && resp.body) {
        setConn('live', 'live');
        for (const fn of connectListeners) fn();
        const listen = () => {
          clearTimeout(silence);
          silence = setTimeout(() => { silent = true; abort.abort(); }, silentMs);
        };
        listen();
        await readSSE(resp, handleEvent, listen);
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
      if (silent) setConn('reconnecting', 'events: nothing heard for ' + silentMs / 1000 + ' s, reconnecting…');
      else if (!abort.signal.aborted) setConn('reconnecting', 'reconnecting…');
    }
    clearTimeout(silence);
    await new Promise((r) => setTimeout(r, abort.signal.aborted ? 0 : retryMs));
  }
}

const connectListeners = [];

// onConnect registers fn to run whenever the event stream (re)connects, or
// the token changes: the moment to reload state.
function onConnect(fn) {
  connectListeners.push(fn);
}

// reconnect drops the event stream so that it starts again, with the token
// now stored.
function reconnect() {
  setConn('connecting', 'connecting…');
  if (streamAbort) streamAbort.abort();
  for (const fn of connectListeners) fn();
}

// Router -------------------------------------------------------------------

const views = {};
let currentView = null;

// addView registers a view: show(arg) runs when the URL's hash selects it
// (arg is the task ID of #/tasks/ID), hide() when another is shown.
function addView(name, v) {
  views[name] = v;
}

function route() {
  const h = location.hash.replace(/^#\/?/, '');
  let name = 'overview', arg = '';
  if (h === 'tasks') name = 'tasks';
  else if (h.startsWith('tasks/')) {
    name = 'task';
    // A malformed %-escape (a cut or hand-typed link) is taken as written:
    // a throw here would stop the page before its event stream starts.
    try { arg = decodeURIComponent(h.slice(6)); } catch (e) { arg = h.slice(6); }
  }
  if (currentView && currentView !== name && views[currentView].hide) views[currentView].hide();
  currentView = name;
  for (const m of document.querySelectorAll('main.view')) m.hidden = m.id !== 'view-' + name;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
  const nav = $('nav-task');
  if (name === 'task') {
    nav.hidden = false;
    nav.href = '#/tasks/' + encodeURIComponent(arg);
    nav.textContent = 'Task ' + shortID(arg);
  }
  views[name].show(arg);
}

// openTask shows one task's view.
function openTask(id) {
  location.hash = '#/tasks/' + encodeURIComponent(id);
}
