// A worker that timed out comes back still running its task, before the
// task went to another worker: the master re-queued it (task.requeued, its
// bar ends in a ✕) and then gives it back to that worker (task.assigned,
// reason reclaimed, the same attempt). The bar goes on as that delivery's,
// and is no lost delivery: no ✕ while it runs, nor once it succeeds.
const { timeline } = require('./dom');
const t0 = Date.parse('2026-01-01T00:00:00Z');
const { w, at, send } = timeline(t0);
const id = 'task-1';
let fail = 0;
function check(when, want) {
  w.run('timelineDraw()');
  const b = JSON.parse(w.run('JSON.stringify(bars.get("' + id + '/1"))'));
  // The ✕ is a path of class mark in the bar's group.
  const marks = JSON.parse(w.run(`JSON.stringify((() => { let n = 0;
    const walk = (x) => { if (x.attrs && x.attrs.class === 'mark') n++; x.children.forEach(walk); };
    walk(document.getElementById('timeline')); return n; })())`));
  const ok = b && b.outcome === want && !b.lost && marks === 0 && !b.reason;
  if (!ok) fail++;
  console.log((ok ? 'ok   ' : 'FAIL ') + when + ': bar ' + JSON.stringify(b) + ', ✕ marks drawn: ' + marks +
    ' (want outcome ' + want + ', not lost, no reason, no ✕)');
}
send({ type: 'task.queued', task_id: id, cmd: 'sleep 20', time: at(0) });
send({ type: 'task.assigned', task_id: id, worker_id: 'w1', attempt: 1, wait_seconds: 0, time: at(0) });
send({ type: 'worker.timed_out', worker_id: 'w1', reason: 'timed_out', time: at(5) });
send({ type: 'worker.left', worker_id: 'w1', reason: 'timed_out', time: at(5) });
send({ type: 'task.requeued', task_id: id, worker_id: 'w1', attempt: 1, reason: 'worker_timed_out', time: at(5) });
send({ type: 'task.assigned', task_id: id, worker_id: 'w1', attempt: 1, reason: 'reclaimed', time: at(10) });
send({ type: 'worker.joined', worker_id: 'w1', slots: 1, position: 0, time: at(10) });
w.setNow(t0 + 12 * 1000);
check('reclaimed, running', 'running');
send({ type: 'task.finished', task_id: id, worker_id: 'w1', attempt: 1, status: 'succeeded', exit_code: 0, run_seconds: 20, time: at(20) });
w.setNow(t0 + 21 * 1000);
check('reclaimed, then succeeded', 'succeeded');
process.exit(fail ? 1 : 0);
