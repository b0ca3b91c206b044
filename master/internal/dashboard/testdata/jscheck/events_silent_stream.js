// An event stream that goes silent (a laptop that slept, a NAT that forgot
// the connection) is never told it ended: the page would show "live" with
// nothing coming. Once nothing has come for silentMs (three of the master's
// heartbeats) it drops the stream and opens it again from the last event
// seen. Control: a heartbeat counts as something heard, and puts the wait
// off.
const { load } = require('./dom');

function run(heartbeat) {
  const timers = new Map();
  let nextTimer = 1;
  const fetches = [];
  const bodies = [];
  const w = load(['app.js'], {
    setTimeout: (fn, ms) => { const id = nextTimer++; timers.set(id, { fn, ms }); return id; },
    clearTimeout: (id) => { timers.delete(id); },
    fetch: (url, opts) => {
      fetches.push({ url: String(url), lastEventId: (opts.headers || {})['Last-Event-ID'] });
      let ctl;
      const body = new ReadableStream({ start(c) { ctl = c; } });
      opts.signal.addEventListener('abort', () => ctl.error(new Error('aborted')));
      bodies.push(ctl);
      return Promise.resolve(new Response(body, { status: 200 }));
    },
  });
  const silentMs = w.run('typeof silentMs === "number" ? silentMs : 45000');
  const pending = () => [...timers.entries()].filter(([, t]) => t.ms === silentMs);
  const tick = () => new Promise((r) => setImmediate(r));
  return (async () => {
    w.run('streamEvents()');
    for (let i = 0; i < 20 && bodies.length === 0; i++) await tick();
    bodies[0].enqueue(new TextEncoder().encode('id: 7\nevent: worker.joined\ndata: {"worker_id":"w1"}\n\n'));
    for (let i = 0; i < 20; i++) await tick();
    const armed = pending().map(([id]) => id);
    if (heartbeat) {
      bodies[0].enqueue(new TextEncoder().encode(': heartbeat\n\n'));
      for (let i = 0; i < 20; i++) await tick();
      const now = pending().map(([id]) => id);
      return { fetches, ok: armed.length === 1 && now.length === 1 && now[0] !== armed[0], detail: 'silence timers ' + JSON.stringify(armed) + ' then ' + JSON.stringify(now) };
    }
    if (armed.length !== 1) return { fetches, ok: false, detail: 'silence timers armed after the event: ' + armed.length + ', want 1' };
    const t = timers.get(armed[0]);
    timers.delete(armed[0]);
    t.fn(); // silentMs without a byte
    for (let i = 0; i < 20; i++) await tick();
    const status = w.run('document.getElementById("conn-status").textContent');
    for (const [id, x] of [...timers.entries()]) if (x.ms === 0) { timers.delete(id); x.fn(); } // the loop's wait before it reconnects
    for (let i = 0; i < 20; i++) await tick();
    const ok = fetches.length === 2 && fetches[1].url === '/events' && fetches[1].lastEventId === '7' && status.includes('nothing heard');
    return { fetches, ok, detail: 'status ' + JSON.stringify(status) };
  })();
}

(async () => {
  let fail = 0;
  for (const [heartbeat, name, want] of [
    [false, 'a silent event stream', 'want it dropped and opened again from event 7'],
    [true, 'a heartbeat (control)', 'want the silence timer put off, one armed'],
  ]) {
    const { fetches, ok, detail } = await run(heartbeat);
    if (!ok) fail++;
    console.log((ok ? 'ok   ' : 'FAIL ') + name + ': fetches ' + JSON.stringify(fetches) + '; ' + detail + (ok ? '' : '; ' + want));
  }
  process.exit(fail ? 1 : 0);
})();
