// A task view opened without the API token (a link opened in a new tab:
// the token is kept per tab) shows the 401's error; once the token is
// entered the view reads the task again (onConnect), and that error must
// go with it, not stay above a task that now shows. Control: the error of
// a refused Cancel stays after the read that follows it (README: "with
// the master's error shown if one is refused").
const { load } = require('./dom');
const task = { id: 't', cmd: 'sleep 60', status: 'running', attempts: 1, max_attempts: 3, created_at: '2026-01-01T00:00:00Z', history: [] };
const json = (status, body) => Promise.resolve(new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } }));
const tick = () => new Promise((r) => setTimeout(r, 50));

function page(answers) {
  const w = load(['app.js', 'taskview.js'], {
    fetch: (url, opts) => {
      const key = ((opts && opts.method) || 'GET') + ' ' + url;
      if (key === 'GET /tasks/t' && answers.length) return answers.shift()();
      if (key === 'DELETE /tasks/t') return json(409, { error: 'task t is succeeded; only a live task can be canceled' });
      return new Promise(() => {}); // the output follow: left open
    },
  });
  w.run('startTaskView()');
  w.run('document.getElementById("view-task")').hidden = false;
  return w;
}

(async () => {
  let fail = 0;
  const check = (ok, what) => { if (!ok) fail++; console.log((ok ? 'ok   ' : 'FAIL ') + what); };

  let w = page([() => json(401, { error: 'unauthenticated: missing API token' }), () => json(200, task)]);
  w.run('views.task.show("t")');
  await tick();
  const err = w.run('document.getElementById("tv-error")');
  check(!err.hidden && err.textContent.startsWith('unauthorized'), 'without the token: error shown (' + JSON.stringify(err.textContent) + ')');
  w.run('loadTask()'); // onConnect, once the token is entered
  await tick();
  check(w.run('document.getElementById("tv-cmd")').textContent === 'sleep 60', 'with the token: the task shows');
  check(err.hidden, 'with the token: the 401\'s error ' + (err.hidden ? 'gone' : 'still shown: ' + JSON.stringify(err.textContent)));

  w = page([() => json(200, task), () => json(200, task)]);
  w.run('views.task.show("t")');
  await tick();
  w.run('act(document.getElementById("tv-cancel"), "DELETE", "/tasks/t", "cancel")');
  await tick();
  const err2 = w.run('document.getElementById("tv-error")');
  check(!err2.hidden && err2.textContent.startsWith('cancel failed'), 'a refused cancel: its error stays after the read that follows (' +
    JSON.stringify(err2.hidden ? '' : err2.textContent) + ')');
  process.exit(fail ? 1 : 0);
})();
