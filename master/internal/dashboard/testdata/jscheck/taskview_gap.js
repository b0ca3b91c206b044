// A gap in mid-stream (the master restarted, or the page fell too far
// behind) means events were missed, maybe the very ones of the task the
// open task view shows: the overview and the timeline reload on it, and so
// must the task view, or it shows a task still running that has ended.
// Controls: the gap that starts the first stream is no news (handleEvent
// drops it), and a hidden task view reads nothing.
const { load } = require('./dom');
const running = { id: 't', cmd: 'sleep 60', status: 'running', attempts: 1, max_attempts: 3, created_at: '2026-01-01T00:00:00Z',
  history: [{ attempt: 1, worker_id: 'w1', outcome: 'running', assigned_at: '2026-01-01T00:00:00Z' }] };
const done = Object.assign({}, running, { status: 'succeeded', exit_code: 0, finished_at: '2026-01-01T00:01:00Z',
  history: [{ attempt: 1, worker_id: 'w1', outcome: 'succeeded', exit_code: 0, assigned_at: '2026-01-01T00:00:00Z', finished_at: '2026-01-01T00:01:00Z' }] });
const json = (body) => Promise.resolve(new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } }));
const tick = () => new Promise((r) => setTimeout(r, 300)); // past loadTaskSoon's 200 ms

async function run(name, { seenBefore, hidden }) {
  const reads = [];
  const w = load(['app.js', 'taskview.js'], {
    setTimeout, clearTimeout,
    fetch: (url) => {
      if (String(url) === '/tasks/t') {
        reads.push(url);
        return json(reads.length === 1 ? running : done);
      }
      return new Promise(() => {}); // the output follow: left open
    },
  });
  w.run('startTaskView()');
  const view = w.run('document.getElementById("view-task")');
  view.hidden = false;
  w.run('views.task.show("t")');
  await tick();
  if (seenBefore) w.run('handleEvent("worker.joined", ' + JSON.stringify(JSON.stringify({ type: 'worker.joined', worker_id: 'w2' })) + ', "7")');
  if (hidden) { w.run('views.task.hide()'); view.hidden = true; }
  w.run('handleEvent("gap", ' + JSON.stringify(JSON.stringify({ type: 'gap', last_seq: 9 })) + ', "9")');
  await tick();
  return { name, reads: reads.length, status: w.run('document.getElementById("task-view").dataset.status') };
}

(async () => {
  let fail = 0;
  const check = (ok, what) => { if (!ok) fail++; console.log((ok ? 'ok   ' : 'FAIL ') + what); };
  let r = await run('gap in mid-stream', { seenBefore: true });
  check(r.reads === 2 && r.status === 'succeeded', r.name + ': task reads ' + r.reads + ', status shown ' + r.status +
    ' (want the task read again after the gap, and succeeded shown)');
  r = await run('gap first on the stream (control)', { seenBefore: false });
  check(r.reads === 1 && r.status === 'running', r.name + ': task reads ' + r.reads + ', status shown ' + r.status + ' (want one read)');
  r = await run('gap in mid-stream, view hidden (control)', { seenBefore: true, hidden: true });
  check(r.reads === 1, r.name + ': task reads ' + r.reads + ' (want no read for a hidden view)');
  process.exit(fail ? 1 : 0);
})();
