// Opening the page at a hash with a malformed %-escape (a hand-typed or
// cut link, e.g. #/tasks/50%) must still start the page: the event stream
// among the rest. start.js calls route() and then streamEvents().
const { load } = require('./dom');
let fetched = [];
const w = load(['app.js', 'overview.js', 'charts.js', 'timeline.js', 'tasks.js', 'taskview.js'], {
  hash: '#/tasks/50%', fetch: (url) => { fetched.push(url); return new Promise(() => {}); },
});
// start.js's listener, as written there, run by hand.
w.run('var __domReady; document.addEventListener = (t, fn) => { __domReady = fn; };');
w.run(require('fs').readFileSync(require('path').join(__dirname, '..', '..', 'web', 'start.js'), 'utf8'));
let err = null;
try { w.run('__domReady()'); } catch (e) { err = e; }
const streamed = fetched.includes('/events');
console.log('DOMContentLoaded handler: ' + (err ? 'threw ' + err.name + ': ' + err.message : 'ok') + '; GET /events requested: ' + streamed);
const status = w.byId['conn-status'] ? w.byId['conn-status'].textContent : '';
console.log((streamed && !err ? 'ok   ' : 'FAIL ') + 'page at #/tasks/50% ' + (streamed ? 'follows the event stream' : 'never opens the event stream (status stays "' + (status || 'connecting…') + '")'));
process.exit(streamed && !err ? 0 : 1);
