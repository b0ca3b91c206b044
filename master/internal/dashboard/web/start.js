// Starts the page: the token form, each view's listeners, the router and
// the event stream. It runs last, once every script is loaded.
'use strict';

document.addEventListener('DOMContentLoaded', () => {
  $('token-input').value = sessionStorage.getItem(TOKEN_KEY) || '';
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const tok = $('token-input').value.trim();
    if (tok) sessionStorage.setItem(TOKEN_KEY, tok); else sessionStorage.removeItem(TOKEN_KEY);
    reconnect(); // the event stream, and each view's data, with the new token
  });
  startOverview();
  startCharts();
  startTimeline();
  startTasks();
  startTaskView();
  window.addEventListener('hashchange', route);
  route();
  streamEvents();
});
