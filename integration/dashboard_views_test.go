package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard's Tasks view and task view, in headless chromium against a
// master and two workers: the table's status filter and command search
// show only the matching rows; the task view shows a running task's output
// line by line before the task is final; Cancel and Retry on the page do
// what they say, as the REST API confirms.
func TestDashboardTasks(t *testing.T) {
	needChromium(t)
	l := newLab(t)
	l.startWorker("worker-a", 2)
	l.startWorker("worker-b", 2)
	p := openDashboard(t, l, "dashboard-tasks-last.png")

	alpha := l.submit("echo alpha-one").ID
	beta := l.submit("echo beta-two; exit 3").ID
	gamma := l.submit("echo gamma-three").ID
	l.watch(alpha, beta, gamma)
	for _, id := range []string{alpha, beta, gamma} {
		l.waitFinal(id)
	}

	p.goTo("#/tasks")
	p.waitRows("see the three tasks, newest first", gamma, beta, alpha)
	p.shot("dashboard-tasks.png")
	p.choose("filter by status failed", "#filter-status", "failed")
	p.waitRows("see only the failed task", beta)
	p.choose("filter by any status", "#filter-status", "")
	p.do("search the commands for -t", chromedp.SendKeys(chromedp.CSS(`#filter-cmd`), "-t"))
	p.waitRows("see only the commands with -t", gamma, beta)
	p.choose("filter by status succeeded", "#filter-status", "succeeded")
	p.waitRows("see only the succeeded command with -t", gamma)

	// New tasks appear in the table as they are submitted, and their status
	// changes live: here one that matches the filters once it succeeds.
	delta := l.submit("echo delta-three").ID
	l.watch(delta)
	p.waitRows("see the new matching task appear", delta, gamma)
	p.do("open the task from its row", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#tasks-body tr[data-task-id=%q] td.cmd`, delta))))
	p.visible("see the task view of the clicked task", fmt.Sprintf(`#task-view[data-task-id=%q][data-status="succeeded"]`, delta))

	// No subtests: the lab's helpers fail the test that made it.
	p.followOutput()
	p.cancelAndRetry()
}

// followOutput opens the view of a task that prints a line every 200 ms and
// checks that its lines appear while it runs, then all of them at its end.
// The task waits at a gate after line-3 until the page has shown it: so it
// is still running then, however slow the machine.
func (p *dashboardPage) followOutput() {
	t, l := p.t, p.l
	const lines = 30
	id := l.submit(fmt.Sprintf("i=0; while [ $i -lt %d ]; do i=$((i+1)); echo line-$i; if [ $i -eq 3 ]; then %s; fi; sleep 0.2; done", lines, gate("line-3"))).ID
	l.watch(id)
	p.goTo("#/tasks/" + id)
	// Poll the page, and as soon as it shows line-3 ask the API whether the
	// task has ended: it must not have, or the page merely showed the result.
	n, err := chromedp.Run(p.ctx, chromedp.Poll[int](
		`(() => { const s = document.querySelector('#tv-stdout').textContent; return s.includes('line-3\n') ? s.split('\n').length - 1 : 0 })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("the task view never showed line-3 of a running task (output now %q): %v", p.text(`#tv-stdout`), err)
	}
	tk, err := l.api.Get(l.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Final() || n >= lines {
		t.Fatalf("the page showed line-3 only when the task was %s with %d of %d lines shown: the output was not followed live", tk.Status, n, lines)
	}
	l.openGate("line-3", tk.Worker())
	p.visible("see the task end in the view", fmt.Sprintf(`#task-view[data-task-id=%q][data-status="succeeded"] #tv-output[data-ended="true"]`, id))
	got := strings.Fields(p.text(`#tv-stdout`))
	if len(got) != lines || got[0] != "line-1" || got[lines-1] != fmt.Sprintf("line-%d", lines) {
		t.Fatalf("the task view shows %d lines (%q), want line-1 to line-%d once each", len(got), got, lines)
	}
	p.shot("dashboard-task.png")
}

// cancelAndRetry cancels a running task with the page's Cancel button,
// then runs it again with Retry.
func (p *dashboardPage) cancelAndRetry() {
	t, l := p.t, p.l
	id := l.submit("echo started; sleep 60").ID
	l.watch(id)
	p.goTo("#/tasks/" + id)
	view := fmt.Sprintf(`#task-view[data-task-id=%q]`, id)
	p.visible("see the task run", view+`[data-status="running"]`)
	p.visible("see Cancel enabled", `#tv-cancel:not([disabled])`)
	p.visible("see Retry disabled while it runs", `#tv-retry[disabled]`)
	p.do("click Cancel", chromedp.Click(chromedp.CSS(`#tv-cancel`)))
	p.visible("see the task canceled", view+`[data-status="canceled"]`)
	if tk := l.waitFinal(id); tk.Status != "canceled" {
		t.Fatalf("after Cancel on the page the API says %s, want canceled", tk.Status)
	}
	p.visible("see Retry enabled", `#tv-retry:not([disabled])`)
	p.do("click Retry", chromedp.Click(chromedp.CSS(`#tv-retry`)))
	p.visible("see the second attempt run", `#tv-history-body tr[data-attempt="2"][data-outcome="running"]`)
	tk, err := l.api.Get(l.ctx, id)
	if err != nil || tk.Final() || len(tk.History) != 2 || tk.History[0].Outcome != "canceled" {
		t.Fatalf("after Retry on the page the API says %+v, %v; want it live again with a second attempt", tk, err)
	}
	if p.visibleNow(`#tv-error`) {
		t.Fatalf("the task view shows an error: %q", p.text(`#tv-error`))
	}
	p.do("click Cancel again", chromedp.Click(chromedp.CSS(`#tv-cancel`)))
	p.visible("see the retried task canceled", view+`[data-status="canceled"]`)
}

// The timeline, in headless chromium against a master and three workers:
// a lane per worker in rotation order, a bar per attempt on the lane of
// the worker that ran it; a worker killed mid-task leaves a lost bar that
// ends in a mark, and the task's re-run appears on another lane. The rate
// charts count what happened.
func TestDashboardTimeline(t *testing.T) {
	needChromium(t)
	l := newLab(t, withMasterEnv("MASTER_WORKER_TIMEOUT", "3s"))
	lanes := []string{"lane-a", "lane-b", "lane-c"}
	for _, id := range lanes {
		l.startWorker(id, 1)
	}
	p := openDashboard(t, l, "dashboard-timeline-last.png")
	p.poll("see a lane per worker in rotation order", `document.querySelector('#timeline').dataset.lanes === "lane-a,lane-b,lane-c"`)

	used := map[string]bool{}
	for i := range lanes {
		tk := l.submit(fmt.Sprintf("echo tick-%d", i))
		l.watch(tk.ID)
		tk = l.waitFinal(tk.ID)
		used[tk.Worker()] = true
		p.visibleBar("see the task's bar on its worker's lane", tk.Worker(), tk.ID, 1, "succeeded")
	}
	if len(used) != len(lanes) {
		t.Fatalf("three tasks one after another ran on %v, want one on each worker in turn", used)
	}

	id := l.submit("echo running; sleep 60").ID
	l.watch(id)
	waitStatus(t, l, id, "running")
	tk, err := l.api.Get(l.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	victim := tk.Worker()
	p.visibleBar("see the running bar", victim, id, 1, "running")

	// Watch the kill from the task's view, then from the timeline.
	p.goTo("#/tasks/" + id)
	p.visible("see the task view follow attempt 1", `#tv-output[data-following="true"][data-attempt="1"]`)
	l.docker("kill", l.workers[victim].GetContainerID()) // SIGKILL: the worker just vanishes
	p.visible("see the task view tell of the lost attempt", `#tv-notes [data-event="attempt_end"][data-outcome="lost"]`)
	p.visible("see the task view follow attempt 2", `#tv-output[data-following="true"][data-attempt="2"]`)
	p.visible("see the attempts in the task view", `#tv-history-body tr[data-attempt="1"][data-outcome="lost"] ~ tr[data-attempt="2"][data-outcome="running"]`)
	p.shot("dashboard-task-rerun.png")
	p.goTo("#/")

	p.visibleBar("see the killed worker's bar end lost", victim, id, 1, "lost")
	if n := p.count(fmt.Sprintf(`#timeline [data-lane=%q] [data-task=%q][data-attempt="1"] .mark`, victim, id)); n != 1 {
		t.Fatalf("the lost bar has %d marks, want 1", n)
	}
	rerun, err := chromedp.Run(p.ctx, chromedp.Poll[string](fmt.Sprintf(
		`(() => { const b = document.querySelector('#timeline [data-task=%q][data-attempt="2"]'); return b ? b.closest('[data-lane]').dataset.lane : '' })()`, id),
		chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("the re-run never appeared on the timeline: %v", err)
	}
	waitStatus(t, l, id, "running")
	if tk, err = l.api.Get(l.ctx, id); err != nil || len(tk.History) != 2 {
		t.Fatalf("the killed task: %+v, %v; want a second attempt", tk, err)
	}
	if rerun == victim || rerun != tk.History[1].WorkerID {
		t.Fatalf("the re-run is drawn on lane %s; the API says it runs on %s, the killed worker was %s", rerun, tk.History[1].WorkerID, victim)
	}
	p.poll("see the killed worker's lane marked as left",
		fmt.Sprintf(`(() => { const l = document.querySelector('#timeline [data-lane=%q]'); return !!l && l.classList.contains('gone') && l.textContent.includes('(left)') })()`, victim))
	p.poll("see 2 workers connected on the chart", `document.querySelector('#rate-workers').dataset.value === "2"`)
	p.poll("see the 4 submissions counted", `document.querySelector('#rate-submitted').dataset.total === "4"`)
	p.poll("see the 3 ends counted", `document.querySelector('#rate-finished').dataset.total === "3"`)
	p.choose("show the last 30 s", "#timeline-range", "30")
	p.do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	p.shot("dashboard-timeline.png")

	if _, code, err := l.api.Cancel(l.ctx, id); err != nil {
		t.Fatalf("cancel: %d %v", code, err)
	}
	p.visibleBar("see the re-run's bar end canceled", rerun, id, 2, "canceled")
	p.poll("see the cancel counted as an end", `document.querySelector('#rate-finished').dataset.total === "4"`)
}

func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("this test drives %s, which is missing: install Debian's chromium (apt-get install chromium; .ci/run does): %v", chromiumPath, err)
	}
}

// goTo shows the view a URL hash names, e.g. #/tasks.
func (p *dashboardPage) goTo(hash string) {
	p.t.Helper()
	p.do("go to "+hash, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`location.hash = %q`, hash)))
}

// choose picks a value of a select, as a user does: with a change event.
func (p *dashboardPage) choose(what, sel, value string) {
	p.t.Helper()
	p.do(what, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const s = document.querySelector(%q); s.value = %q; s.dispatchEvent(new Event('change')) })()`, sel, value)))
}

// poll waits until the JavaScript expression is true.
func (p *dashboardPage) poll(what, expr string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr)); err != nil {
		p.t.Fatalf("%s: %v (waiting for %s)", what, err, expr)
	}
}

// waitRows waits until the task table shows exactly the tasks ids, in
// that order.
func (p *dashboardPage) waitRows(what string, ids ...string) {
	p.t.Helper()
	const rows = `[...document.querySelectorAll('#tasks-body tr')].map(r => r.dataset.taskId)`
	want := strings.Join(ids, ",")
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](fmt.Sprintf(`%s.join(',') === %q`, rows, want))); err != nil {
		got, _ := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](rows))
		p.t.Fatalf("%s: the table shows %v, want %v: %v", what, got, ids, err)
	}
}

// visibleBar waits for the timeline bar of a task's attempt, with an
// outcome, on a worker's lane.
func (p *dashboardPage) visibleBar(what, lane, task string, attempt int, outcome string) {
	p.t.Helper()
	sel := fmt.Sprintf(`#timeline [data-lane=%q] [data-task=%q][data-attempt="%d"][data-outcome=%q]`, lane, task, attempt, outcome)
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](fmt.Sprintf(`!!document.querySelector(%q)`, sel), chromedp.WithPollingTimeout(40*time.Second))); err != nil {
		bars, _ := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#timeline [data-task]')].map(b => b.closest('[data-lane]').dataset.lane + ' ' + b.dataset.task.slice(-8) + '#' + b.dataset.attempt + ' ' + b.dataset.outcome)`))
		p.t.Fatalf("%s: no %s; the bars: %v: %v", what, sel, bars, err)
	}
}

// shot saves a screenshot of the page as it is now.
func (p *dashboardPage) shot(name string) {
	p.t.Helper()
	screenshot(p.t, p.ctx, name)
}
