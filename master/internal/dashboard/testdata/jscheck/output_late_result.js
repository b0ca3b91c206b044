// The task view following a task that a late result decides (docs/labs.md's
// pause-worker "the other way round"): attempt 1's worker is lost, attempt 2
// runs elsewhere, then attempt 1's worker comes back and reports first. Its
// result is the task's; the master kills attempt 2. The follow then sends,
// before `end` (attempt 1), what of attempt 1's stored output it had not sent
// live (outputsse.go's finish), and a follow of the final task sends
// attempt 1's whole stored output. The pane must end with the task's output,
// not attempt 2's, cut short by the kill.
const { load } = require('./dom');
const sse = (evs) => evs.map(([type, data]) => 'event: ' + type + '\ndata: ' + JSON.stringify(data) + '\n\n').join('');
const end = { status: 'succeeded', exit_code: 0, error: null, attempt: 1, stdout_truncated: false, stderr_truncated: false };
const bodies = [
  // The follow open while it all happens.
  sse([
    ['attempt', { attempt: 1, worker_id: 'w2' }],
    ['output', { attempt: 1, stream: 'stdout', offset: 0, text: 'a: 1\n' }],
    ['attempt_end', { attempt: 1, worker_id: 'w2', outcome: 'lost', detail: 'worker w2 timed out' }],
    ['attempt', { attempt: 2, worker_id: 'w1' }],
    ['output', { attempt: 2, stream: 'stdout', offset: 0, text: 'b: 1\n' }],
    ['output', { attempt: 1, stream: 'stdout', offset: 5, text: 'a: 2\na: done\n' }],
    ['end', end],
  ]),
  // A follow of the task once final.
  sse([
    ['attempt', { attempt: 1, worker_id: 'w2' }],
    ['output', { attempt: 1, stream: 'stdout', offset: 0, text: 'a: 1\na: 2\na: done\n' }],
    ['end', end],
  ]),
];
const want = 'a: 1\na: 2\na: done\n';

let follows = 0;
const w = load(['app.js', 'taskview.js'], {
  setTimeout: (fn) => { setImmediate(fn); return 0; },
  fetch: (url) => {
    if (!String(url).endsWith('/output?follow=true') || follows >= bodies.length) return new Promise(() => {});
    return Promise.resolve(new Response(bodies[follows++], { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  },
});
const done = w.run('startFollow("t")');
const deadline = new Promise((r) => setTimeout(() => r('timeout'), 3000));
Promise.race([done.then(() => 'done'), deadline]).then((how) => {
  const got = w.byId['tv-stdout'].textContent, state = w.byId['tv-output-state'].textContent;
  const ok = how === 'done' && got === want && state.startsWith('attempt 1:');
  console.log((ok ? 'ok   ' : 'FAIL ') + 'task decided by a late result of attempt 1: follow ' + how + ' after ' + follows +
    ' request(s); stdout pane ' + JSON.stringify(got) + ', state ' + JSON.stringify(state) +
    (ok ? '' : '; want ' + JSON.stringify(want) + ', the task\'s output, and attempt 1 named'));
  process.exit(ok ? 0 : 1);
});
