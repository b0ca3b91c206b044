// Minimal DOM stub for loading the dashboard's classic scripts in node (vm).
'use strict';
const fs = require('fs');
const vm = require('vm');
const path = require('path');

class Node {
  constructor(tag) { this.tagName = tag; this.children = []; this.parentNode = null; this._text = ''; this.dataset = {}; this.attrs = {};
    this.className = ''; this.hidden = false; this.listeners = {}; this.scrollTop = 0; this.clientHeight = 0; this.scrollHeight = 0; this.clientWidth = 800;
    const self = this; this.classList = { add(c) { self.className += ' ' + c; }, toggle() {}, contains(c) { return self.className.split(' ').includes(c); } }; }
  get textContent() { return this.tagName === '#text' ? this._text : this._text + this.children.map((c) => c.textContent).join(''); }
  set textContent(v) { this.children = []; this._text = String(v); }
  appendChild(n) { if (n.parentNode) n.remove(); n.parentNode = this; this.children.push(n); return n; }
  append(...ns) { for (const n of ns) this.appendChild(n); }
  prepend(n) { n.parentNode = this; this.children.unshift(n); }
  replaceChildren(...ns) { this.children = []; this._text = ''; for (const n of ns) this.appendChild(n); }
  remove() { if (this.parentNode) { const p = this.parentNode; p.children = p.children.filter((c) => c !== this); this.parentNode = null; } }
  get lastElementChild() { return this.children[this.children.length - 1] || null; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  addEventListener(t, fn) { (this.listeners[t] = this.listeners[t] || []).push(fn); }
  querySelector(sel) { this._q = this._q || {}; if (!this._q[sel]) { const n = new Node('x'); n.getContext = () => new Proxy({}, { get: (t, k) => (k in t ? t[k] : () => {}), set: (t, k, v) => { t[k] = v; return true; } }); this._q[sel] = n; } return this._q[sel]; }
  querySelectorAll() { return []; }
  closest() { return null; }
}

function load(files, opts) {
  opts = opts || {};
  const byId = {};
  const document = {
    getElementById(id) { return byId[id] || (byId[id] = new Node('div')); },
    createElement(t) { return new Node(t); },
    createElementNS(ns, t) { return new Node(t); },
    createTextNode(t) { const n = new Node('#text'); n._text = String(t); return n; },
    querySelector() { return null; },
    querySelectorAll() { return []; },
    addEventListener() {},
  };
  let now = opts.now || Date.now();
  const RealDate = Date;
  class FakeDate extends RealDate { constructor(...a) { if (a.length === 0) super(now); else super(...a); } static now() { return now; } }
  const store = {};
  const ctx = {
    document, console, TextEncoder, TextDecoder, TextDecoderStream, URLSearchParams, AbortController, JSON, Math, Promise,
    Date: FakeDate, isNaN, parseInt, String, Object, Array, Map, Set, Error,
    setTimeout: opts.setTimeout || (() => 0), clearTimeout: opts.clearTimeout || (() => {}), setInterval() { return 0; },
    requestAnimationFrame: () => 0,
    sessionStorage: { getItem: (k) => (k in store ? store[k] : null), setItem: (k, v) => { store[k] = String(v); }, removeItem: (k) => { delete store[k]; } },
    location: { hash: opts.hash || '' },
    window: { addEventListener() {}, devicePixelRatio: 1 },
    getComputedStyle: () => ({ color: '#000' }),
    CSS: { escape: (s) => s },
    fetch: opts.fetch || (() => new Promise(() => {})),
  };
  vm.createContext(ctx);
  for (const f of files) vm.runInContext(fs.readFileSync(path.join(opts.dir || path.join(__dirname, '..', '..', 'web'), f), 'utf8'), ctx, { filename: f });
  return { ctx, byId, document, run: (code) => vm.runInContext(code, ctx), setNow: (t) => { now = t; } };
}
// timeline loads the dashboard's overview, charts and timeline with the
// clock at t0 and starts them, for scripts that feed it events: at(s) is
// the time s seconds after t0, send(e) hands event e to the page.
function timeline(t0) {
  const w = load(['app.js', 'overview.js', 'charts.js', 'timeline.js'], { now: t0 });
  w.run('startOverview(); startCharts(); startTimeline();');
  const at = (s) => new Date(t0 + s * 1000).toISOString();
  const send = (e) => w.run('handleEvent("", ' + JSON.stringify(JSON.stringify(e)) + ', "")');
  return { w, at, send };
}
module.exports = { load, timeline, Node };
