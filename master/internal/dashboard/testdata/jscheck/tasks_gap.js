// A gap in mid-stream means events were missed: the Tasks table, which
// changes its rows' statuses from the events, shows what it missed only if
// it reads its page again, as the overview, the timeline and the task view
// do. Controls: the gap that starts the first stream is no news, and a
// hidden table reads nothing.
const { load } = require('./dom');
const tick = () => new Promise((r) => setTimeout(r, 600)); // past tasksSoon's 400 ms

async function run({ seenBefore, hidden }) {
  let reads = 0;
  const w = load(['app.js', 'tasks.js'], {
    setTimeout, clearTimeout,
    fetch: (url) => {
      if (String(url).startsWith('/tasks?')) {
        reads++;
        return Promise.resolve(new Response(JSON.stringify({ tasks: [] }), { status: 200, headers: { 'Content-Type': 'application/json' } }));
      }
      return new Promise(() => {});
    },
  });
  w.run('for (const id of ["filter-status", "filter-worker", "filter-cmd"]) document.getElementById(id).value = ""');
  w.run('startTasks()');
  const view = w.run('document.getElementById("view-tasks")');
  view.hidden = false;
  w.run('loadTasks()'); // the router shows the table
  await tick();
  if (seenBefore) w.run('handleEvent("worker.joined", ' + JSON.stringify(JSON.stringify({ type: 'worker.joined', worker_id: 'w2' })) + ', "7")');
  if (hidden) view.hidden = true;
  w.run('handleEvent("gap", ' + JSON.stringify(JSON.stringify({ type: 'gap', last_seq: 9 })) + ', "9")');
  await tick();
  return reads;
}

(async () => {
  let fail = 0;
  const check = (ok, what) => { if (!ok) fail++; console.log((ok ? 'ok   ' : 'FAIL ') + what); };
  let n = await run({ seenBefore: true });
  check(n === 2, 'gap in mid-stream: ' + n + ' reads of GET /tasks (want the page read again)');
  n = await run({ seenBefore: false });
  check(n === 1, 'gap first on the stream (control): ' + n + ' reads (want one)');
  n = await run({ seenBefore: true, hidden: true });
  check(n === 1, 'gap in mid-stream, table hidden (control): ' + n + ' reads (want one)');
  process.exit(fail ? 1 : 0);
})();
