// The task view's output pane with output that is not valid UTF-8. The
// event sequences are the ones the master sends (see
// master/internal/httpapi/output_utf8_test.go): live `output` offsets count
// the raw bytes, while `text` has U+FFFD (3 bytes) for invalid bytes.
const { load } = require('./dom');
let fail = 0;
function check(name, events, wantStdout) {
  const w = load(['app.js', 'taskview.js']);
  w.run('globalThis.__f = { ctrl: new AbortController(), id: "t", attempt: 0, ended: false, streams: { stdout: 0, stderr: 0 } }; follow = __f;');
  for (const [type, data] of events) w.run(`outputEvent(__f, ${JSON.stringify(type)}, ${JSON.stringify(JSON.stringify(data))})`);
  const got = w.byId['tv-stdout'].textContent;
  const ok = got === wantStdout;
  if (!ok) fail++;
  console.log((ok ? 'ok   ' : 'FAIL ') + name + ': stdout pane ' + JSON.stringify(got) + (ok ? '' : ', want ' + JSON.stringify(wantStdout)));
}
// printf '\xff'; sleep 1; echo hello   (two live chunks)
check('invalid byte, then text in the next chunk', [
  ['attempt', { attempt: 1, worker_id: 'w1' }],
  ['output', { attempt: 1, stream: 'stdout', offset: 0, text: '\uFFFD' }],
  ['output', { attempt: 1, stream: 'stdout', offset: 1, text: 'hello\n' }],
  ['end', { status: 'succeeded', exit_code: 0, error: null, attempt: 1 }],
], '\uFFFDhello\n');
// a run of 4 invalid bytes, then text (raw offsets run ahead of the text)
check('invalid run, then text', [
  ['attempt', { attempt: 1, worker_id: 'w1' }],
  ['output', { attempt: 1, stream: 'stdout', offset: 0, text: '\uFFFD' }],
  ['output', { attempt: 1, stream: 'stdout', offset: 4, text: 'XY\n' }],
  ['end', { status: 'succeeded', exit_code: 0, error: null, attempt: 1 }],
], '\uFFFDXY\n');
// TestFollowOutputInvalidRunSplitAcrossChunksNothingMissed: stored "A\uFFFDBCD\n", "CD\n" sent at the end at text offset 5
check('split invalid run, rest from the stored output', [
  ['attempt', { attempt: 1 }],
  ['output', { attempt: 1, stream: 'stdout', offset: 0, text: 'A\uFFFD' }],
  ['output', { attempt: 1, stream: 'stdout', offset: 2, text: '\uFFFDB' }],
  ['output', { attempt: 1, stream: 'stdout', offset: 5, text: 'CD\n' }],
  ['end', { status: 'succeeded', exit_code: 0, error: null, attempt: 1 }],
], 'A\uFFFD\uFFFDBCD\n');
// control: valid output, a skipped range announced by the master
check('valid text with a skipped range', [
  ['attempt', { attempt: 1 }],
  ['output', { attempt: 1, stream: 'stdout', offset: 0, text: 'ab' }],
  ['skipped', { attempt: 1, stream: 'stdout', bytes: 10 }],
  ['output', { attempt: 1, stream: 'stdout', offset: 12, text: 'cd' }],
], 'ab[… 10 bytes not shown …]\ncd');
process.exit(fail ? 1 : 0);
