// Rates: four small live charts over the last two minutes, drawn on canvas
// by the page (no chart library). Submitted and finished per second are
// counted from the event stream by each event's own time, so the kept
// history fills them at load; queue depth and workers connected are
// sampled from GET /queue and GET /workers (overview.js polls them and
// asks again after every event).
'use strict';

const CHART_WINDOW_MS = 120 * 1000;
// The headline rate is the mean over this many seconds: per-second counts
// jump too much to read.
const RATE_MEAN_S = 10;

const rates = {
  submitted: new Map(), // second (ms since epoch / 1000, floored) -> events
  finished: new Map(),
};
const levels = {
  queue: [], // {t, v}, oldest first
  workers: [],
};

// chartSample records a level (queue depth, workers connected) seen now.
function chartSample(name, v) {
  const s = levels[name];
  const now = Date.now();
  s.push({ t: now, v });
  // Keep one sample from before the window, so the line starts at its edge.
  while (s.length > 2 && s[1].t < now - CHART_WINDOW_MS) s.shift();
  chartsSoon();
}

let chartsPending = false;

// chartsSoon redraws at the next frame: the figures agree with the panels
// at once, and a burst of samples draws once.
function chartsSoon() {
  if (chartsPending) return;
  chartsPending = true;
  requestAnimationFrame(() => { chartsPending = false; chartsDraw(); });
}

// chartEvent counts the events that are a submission or an end. A task
// counts as submitted once: when queued or scheduled on its way in, not
// again when a scheduled one comes due or one is retried by hand (as
// roundhouse_tasks_submitted_total counts).
function chartEvent(e) {
  let name = null;
  if (e.type === 'task.queued' && e.reason !== 'due' && e.reason !== 'retried') name = 'submitted';
  else if (e.type === 'task.scheduled' && e.reason === 'delayed') name = 'submitted';
  else if (e.type === 'task.finished' || e.type === 'task.canceled') name = 'finished';
  if (!name) return;
  const t = e.time ? new Date(e.time).getTime() : Date.now();
  if (isNaN(t) || t < Date.now() - CHART_WINDOW_MS) return;
  const sec = Math.floor(t / 1000);
  const m = rates[name];
  m.set(sec, (m.get(sec) || 0) + 1);
  chartsSoon();
}

function pruneRates(now) {
  const oldest = Math.floor((now - CHART_WINDOW_MS) / 1000);
  for (const m of Object.values(rates)) {
    for (const sec of m.keys()) if (sec < oldest) m.delete(sec);
  }
}

// canvasFor sizes a canvas to its box in device pixels and returns its
// context scaled to CSS pixels, with the box's size.
function canvasFor(c) {
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const ctx = c.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

// niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten.
function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const k of [1, 2, 5, 10]) if (v <= k * p) return k * p;
  return 10 * p;
}

// AXIS_H is the strip under a chart that holds its time labels.
const AXIS_H = 12;

function drawFrame(ctx, w, h, top, color) {
  const base = h - AXIS_H;
  ctx.strokeStyle = '#e3e6ea';
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, base - 0.5);
  ctx.lineTo(w, base - 0.5);
  ctx.moveTo(0, 0.5);
  ctx.lineTo(w, 0.5);
  ctx.stroke();
  ctx.fillStyle = '#6b7482';
  ctx.font = '10px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  ctx.fillText(String(top), 3, 3);
  ctx.textBaseline = 'bottom';
  ctx.fillText('−2 min', 0, h);
  ctx.textAlign = 'right';
  ctx.fillText('now', w, h);
  ctx.textAlign = 'left';
  ctx.fillStyle = color;
  ctx.strokeStyle = color;
  return base;
}

function drawRate(box, m, now) {
  const c = box.querySelector('canvas');
  const { ctx, w, h } = canvasFor(c);
  const nowSec = Math.floor(now / 1000);
  const n = CHART_WINDOW_MS / 1000;
  let peak = 0, total = 0, recent = 0;
  for (const [sec, v] of m) {
    if (sec > nowSec - n) { peak = Math.max(peak, v); total += v; }
    if (sec > nowSec - RATE_MEAN_S) recent += v;
  }
  const top = niceMax(peak);
  const base = drawFrame(ctx, w, h, top, getComputedStyle(c).color);
  const bw = w / n;
  for (const [sec, v] of m) {
    const age = nowSec - sec;
    if (age < 0 || age >= n) continue;
    const bh = (v / top) * (base - 14);
    ctx.fillRect(w - (age + 1) * bw + 0.5, base - 1 - bh, Math.max(1, bw - 1), bh);
  }
  const mean = recent / RATE_MEAN_S;
  box.dataset.value = mean.toFixed(1);
  box.dataset.total = String(total);
  box.querySelector('.chart-value').textContent = mean < 10 ? mean.toFixed(1) : String(Math.round(mean));
  box.title = total + ' in the last 2 minutes; the figure is the mean over the last ' + RATE_MEAN_S + ' s';
}

function drawLevel(box, s, now) {
  const c = box.querySelector('canvas');
  const { ctx, w, h } = canvasFor(c);
  let peak = 0;
  for (const p of s) peak = Math.max(peak, p.v);
  const top = niceMax(peak);
  const base = drawFrame(ctx, w, h, top, getComputedStyle(c).color);
  const x = (t) => w - ((now - t) / CHART_WINDOW_MS) * w;
  const y = (v) => base - 1 - (v / top) * (base - 14);
  if (s.length) {
    // A step line: a level holds until the next sample.
    ctx.beginPath();
    ctx.moveTo(Math.max(0, x(s[0].t)), base - 1);
    let prev = null;
    for (const p of s) {
      const px = Math.max(0, x(p.t));
      if (prev !== null) ctx.lineTo(px, y(prev));
      ctx.lineTo(px, y(p.v));
      prev = p.v;
    }
    ctx.lineTo(w, y(prev));
    ctx.lineTo(w, base - 1);
    ctx.closePath();
    ctx.globalAlpha = 0.18;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
  const last = s.length ? s[s.length - 1].v : 0;
  box.dataset.value = String(last);
  box.querySelector('.chart-value').textContent = String(last);
}

// chartsDraw draws the four charts, when the overview is shown.
function chartsDraw() {
  const now = Date.now();
  pruneRates(now); // also while hidden: a tab left on another view keeps no more
  if ($('view-overview').hidden) return;
  drawRate($('rate-submitted'), rates.submitted, now);
  drawRate($('rate-finished'), rates.finished, now);
  drawLevel($('rate-queue'), levels.queue, now);
  drawLevel($('rate-workers'), levels.workers, now);
}

function startCharts() {
  onEvent(chartEvent);
  setInterval(chartsDraw, 1000);
  window.addEventListener('resize', chartsDraw);
}
