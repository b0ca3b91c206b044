// docs/labs.md's pause-worker "the other way round": a worker is frozen
// mid-task, the task is re-queued and assigned to another worker, and the
// frozen one, thawed, reports first. Its task.finished (attempt 1) decides
// the task; the master kills attempt 2 and no event tells of that delivery
// again. Its bar must end there, not stay running (and kept) forever.
const { timeline } = require('./dom');
const t0 = Date.parse('2026-01-01T00:00:00Z');
const { w, at, send } = timeline(t0);
const id = 'task-1';
let fail = 0;
send({ type: 'task.queued', task_id: id, cmd: 'sleep 14', time: at(0) });
send({ type: 'task.assigned', task_id: id, worker_id: 'w2', attempt: 1, wait_seconds: 0, time: at(0) });
send({ type: 'worker.timed_out', worker_id: 'w2', reason: 'timed_out', time: at(5) });
send({ type: 'worker.left', worker_id: 'w2', reason: 'timed_out', time: at(5) });
send({ type: 'task.requeued', task_id: id, worker_id: 'w2', attempt: 1, reason: 'worker_timed_out', time: at(5) });
send({ type: 'task.assigned', task_id: id, worker_id: 'w1', attempt: 2, wait_seconds: 0, time: at(5) });
send({ type: 'worker.joined', worker_id: 'w2', slots: 1, position: 1, time: at(8) });
send({ type: 'task.finished', task_id: id, worker_id: 'w2', attempt: 1, status: 'succeeded', exit_code: 0, run_seconds: 14, time: at(14) });
w.setNow(t0 + 20 * 1000);
w.run('timelineDraw()');
const b = JSON.parse(w.run('JSON.stringify(bars.get("' + id + '/2"))'));
let ok = b && b.end === t0 + 14 * 1000 && b.outcome !== 'running';
if (!ok) fail++;
console.log((ok ? 'ok   ' : 'FAIL ') + 'the delivery the decided task no longer runs: bar ' + JSON.stringify(b) + ' (want it ended at the task.finished, not running)');
// Ten minutes on, no bar of the task is kept.
w.setNow(t0 + 10 * 60 * 1000);
w.run('timelineDraw()');
const left = JSON.parse(w.run('JSON.stringify([...bars.keys()])'));
ok = left.length === 0;
if (!ok) fail++;
console.log((ok ? 'ok   ' : 'FAIL ') + '10 min later the timeline keeps bars ' + JSON.stringify(left) + ' (want none)');
process.exit(fail ? 1 : 0);
