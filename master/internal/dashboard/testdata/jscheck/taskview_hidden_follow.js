// Leaving a task view while its task is still being read (a click on
// Overview before GET /tasks/{id} answers) must not leave an output follow
// open behind the hidden view: each follow holds one of the master's
// MASTER_MAX_EVENT_STREAMS places, and tvHide closes the follow for that
// reason. Nothing would close this one until another task is opened.
// Control: a view still shown when the answer comes follows the output.
const { load } = require('./dom');
const task = { id: 't', cmd: 'sleep 60', status: 'running', attempts: 1, max_attempts: 3, created_at: '2026-01-01T00:00:00Z',
  history: [{ attempt: 1, worker_id: 'w1', outcome: 'running', assigned_at: '2026-01-01T00:00:00Z' }] };

function open(leave) {
  const fetched = [];
  let answer = null;
  const w = load(['app.js', 'taskview.js'], {
    fetch: (url) => {
      fetched.push(String(url));
      if (String(url) === '/tasks/t') return new Promise((r) => { answer = r; });
      return new Promise(() => {});
    },
  });
  w.run('startTaskView()');
  const view = w.run('document.getElementById("view-task")');
  view.hidden = false;
  w.run('views.task.show("t")'); // the router shows the view: loadTask asks for the task
  if (leave) {
    // The router switches to another view: hide(), then the view is hidden.
    w.run('views.task.hide()');
    view.hidden = true;
  }
  answer(new Response(JSON.stringify(task), { status: 200, headers: { 'Content-Type': 'application/json' } }));
  return new Promise((r) => setTimeout(() => r({ fetched, following: w.run('follow !== null') }), 200));
}

(async () => {
  let fail = 0;
  for (const [leave, name] of [[true, 'task view left before its task was read'], [false, 'task view still shown (control)']]) {
    const { fetched, following } = await open(leave);
    const follows = fetched.filter((u) => u.includes('/output?follow=true')).length;
    const ok = fetched.includes('/tasks/t') && (leave ? follows === 0 && !following : follows === 1 && following);
    if (!ok) fail++;
    console.log((ok ? 'ok   ' : 'FAIL ') + name + ': requests ' + JSON.stringify(fetched) +
      (ok ? '' : leave ? '; want no output follow opened for a hidden view' : '; want the output followed'));
  }
  process.exit(fail ? 1 : 0);
})();
