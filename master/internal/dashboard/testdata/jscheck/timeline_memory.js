// A long-open tab: the timeline's maps must not keep every task ever seen.
// Feeds 2000 tasks (queued, assigned, finished), moves the clock 10 min on
// (past TL_KEEP_MS = 5 min) and draws, as the 1 s interval does.
const { load } = require('./dom');
let fail = 0;
function run(name, overviewHidden) {
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  const w = load(['app.js', 'overview.js', 'charts.js', 'timeline.js'], { now: t0 });
  w.byId['view-overview'] = w.document.getElementById('view-overview');
  w.byId['view-overview'].hidden = overviewHidden;
  w.run('startOverview(); startCharts(); startTimeline();');
  const N = 2000;
  for (let i = 0; i < N; i++) {
    const id = 'task-' + i, time = new Date(t0 + i).toISOString();
    for (const e of [
      { type: 'task.queued', task_id: id, cmd: 'echo ' + 'x'.repeat(190) + i, time },
      { type: 'task.assigned', task_id: id, worker_id: 'w1', attempt: 1, time },
      { type: 'task.finished', task_id: id, worker_id: 'w1', attempt: 1, status: 'succeeded', exit_code: 0, run_seconds: 0.001, time },
    ]) w.run('handleEvent("", ' + JSON.stringify(JSON.stringify(e)) + ', "")');
  }
  w.setNow(t0 + 10 * 60 * 1000);
  w.run('timelineDraw(); chartsDraw();');
  const sizes = JSON.parse(w.run('JSON.stringify({cmds: cmds.size, bars: bars.size})'));
  const ok = sizes.cmds < N && sizes.bars < N;
  if (!ok) fail++;
  console.log((ok ? 'ok   ' : 'FAIL ') + name + ': 10 min after ' + N + ' finished tasks the timeline still holds ' + JSON.stringify(sizes) + ' (want both far below ' + N + ')');
}
// The rate charts' per-second counts, an hour of one task a second while
// the tab shows #/tasks: only the last 2 minutes are ever drawn.
function rates() {
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  const w = load(['app.js', 'overview.js', 'charts.js', 'timeline.js'], { now: t0 });
  w.document.getElementById('view-overview').hidden = true;
  w.run('startOverview(); startCharts(); startTimeline();');
  for (let i = 0; i < 3600; i++) {
    w.setNow(t0 + i * 1000);
    const e = { type: 'task.finished', task_id: 't' + i, worker_id: 'w1', attempt: 1, status: 'succeeded', run_seconds: 0.001, time: new Date(t0 + i * 1000).toISOString() };
    w.run('handleEvent("", ' + JSON.stringify(JSON.stringify(e)) + ', "")');
    if (i % 1 === 0) w.run('chartsDraw(); timelineDraw();'); // the 1 s intervals
  }
  const n = w.run('rates.finished.size');
  const ok = n <= 121;
  if (!ok) fail++;
  console.log((ok ? 'ok   ' : 'FAIL ') + 'rates while on #/tasks: an hour of events leaves ' + n + ' per-second counts (want <= 121)');
}
rates();
run('overview shown', false);
run('tab left on another view (#/tasks)', true);
process.exit(fail ? 1 : 0);
