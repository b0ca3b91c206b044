package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// The dashboard, driven by a real headless browser against a master and two
// workers: it lists the workers in rotation order and marks the next one,
// runs a command typed into its form and shows the output, and shows the
// task in the live event stream. It runs once against an open master and
// once against one with MASTER_API_TOKEN, as the compose lab runs: there the
// page says it is unauthorized until the token is typed into its token
// field, and then does everything with it, the fetch-streamed /events too.
// A screenshot of each run is saved as an artifact.
func TestDashboard(t *testing.T) {
	needChromium(t)
	t.Run("without a token", func(t *testing.T) {
		l := newLab(t)
		l.startWorker("worker-a", 1)
		l.startWorker("worker-b", 2, withWorkerEnv("WORKER_LABELS", "gpu=nvidia,zone=eu"))
		p := openDashboard(t, l, "dashboard.png")
		p.seeWorkersAndRun()
		p.seeLabelsAndWaiting()
	})
	t.Run("with a token", func(t *testing.T) {
		const apiToken, workerToken = "dash-api-token-0123456789abcdef", "dash-worker-token-0123456789abcd"
		l := newLab(t, withTokens(apiToken, workerToken))
		l.startWorker("worker-a", 1)
		l.startWorker("worker-b", 2)
		p := openDashboard(t, l, "dashboard-token.png")

		// Without the token the page shows no data and says why.
		p.visible("see the page say it is unauthorized", `#conn-status[data-state="unauthorized"]`)
		if rows := p.count(`#workers-body tr`); rows != 0 {
			t.Fatalf("the page lists %d workers without the token, want none", rows)
		}
		p.do("submit without the token",
			chromedp.SendKeys(chromedp.CSS(`#cmd-input`), "echo refused"),
			chromedp.Click(chromedp.CSS(`#submit-button`)),
			chromedp.WaitVisible(chromedp.CSS(`#submit-error`)),
		)
		if msg := p.text(`#submit-error`); !strings.Contains(msg, "unauthorized") || !strings.Contains(msg, "MASTER_API_TOKEN") {
			t.Fatalf("the page says %q after a submission without the token, want it to ask for MASTER_API_TOKEN", msg)
		}
		if tasks, _, err := l.api.List(l.ctx, nil); err != nil || len(tasks) != 0 {
			t.Fatalf("GET /tasks: %+v, %v; want no task from the refused submission", tasks, err)
		}

		// The form keeps what was typed; empty it for the run below.
		if _, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.querySelector('#cmd-input').value = ''`)); err != nil {
			t.Fatalf("emptying the command field: %v", err)
		}
		p.do("enter the token",
			chromedp.SendKeys(chromedp.CSS(`#token-input`), apiToken),
			chromedp.Click(chromedp.CSS(`#token-save`)),
		)
		p.seeWorkersAndRun()
		if p.visibleNow(`#submit-error`) {
			t.Fatalf("the page still shows an error after the token was entered: %q", p.text(`#submit-error`))
		}
	})
}

// dashboardPage is a headless chromium showing a lab's dashboard, with
// helpers that fail the test when a step fails.
type dashboardPage struct {
	t   *testing.T
	l   *lab
	ctx context.Context
}

// openDashboard starts chromium on the lab's dashboard page; the screenshot
// named shot is saved when the test ends, also when it fails: it shows why.
func openDashboard(t *testing.T, l *lab, shot string) *dashboardPage {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // CI runs as root, where chromium's sandbox cannot start
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(l.ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelBrowser)
	// The first call starts the browser, which lives as long as that call's
	// context: bctx, not one with a timeout.
	// The window's size leaves out the browser's own bars: the viewport is
	// set to 1280x800 itself, a laptop's screen, where the page must read well.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	t.Cleanup(func() { screenshot(t, bctx, shot) }) // runs before the browser is closed
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	t.Cleanup(cancel)
	p := &dashboardPage{t: t, l: l, ctx: ctx}
	p.do("open the page", chromedp.Navigate(l.api.Base+"/"))
	return p
}

func (p *dashboardPage) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

func (p *dashboardPage) text(sel string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("text of %s: %v", sel, err)
	}
	return v
}

func (p *dashboardPage) visible(what, sel string) {
	p.t.Helper()
	p.do(what, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// count is how many elements match sel now.
func (p *dashboardPage) count(sel string) int {
	p.t.Helper()
	n, err := chromedp.Run(p.ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
	if err != nil {
		p.t.Fatalf("counting %s: %v", sel, err)
	}
	return n
}

// visibleNow reports whether the element sel is shown now.
func (p *dashboardPage) visibleNow(sel string) bool {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](fmt.Sprintf(`!document.querySelector(%q).hidden`, sel)))
	if err != nil {
		p.t.Fatalf("is %s visible: %v", sel, err)
	}
	return v
}

// seeWorkersAndRun checks that the page lists worker-a and worker-b in
// rotation order, runs a command through its form on worker-a, shows the
// output and the task's events, and moves the rotation on.
func (p *dashboardPage) seeWorkersAndRun() {
	t, l := p.t, p.l
	t.Helper()
	p.visible("see worker-b", `#workers-body tr[data-worker-id="worker-b"]`)
	p.visible("see the event stream connected", `#conn-status[data-state="live"]`)
	order, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#workers-body tr')].map(r => r.dataset.workerId)`))
	if err != nil || strings.Join(order, ",") != "worker-a,worker-b" {
		t.Fatalf("workers on the page: %v (%v), want worker-a,worker-b in rotation order", order, err)
	}
	p.visible("see worker-a marked next", `#workers-body tr[data-worker-id="worker-a"][data-next="true"]`)

	const cmd = "echo hello-from-dashboard"
	p.do("submit through the form",
		chromedp.SendKeys(chromedp.CSS(`#cmd-input`), cmd),
		chromedp.Click(chromedp.CSS(`#submit-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#task-result[data-status="succeeded"]`)),
	)
	stdout, worker := p.text(`#task-stdout`), p.text(`#task-worker`)
	attr, err := chromedp.Run(p.ctx, chromedp.AttributeValue(chromedp.CSS(`#task-result`), "data-task-id"))
	if err != nil || attr.Value == "" {
		t.Fatalf("the page shows no task ID: %v", err)
	}
	taskID := attr.Value
	l.watch(taskID)
	if strings.TrimSpace(stdout) != "hello-from-dashboard" || worker != "worker-a" {
		t.Fatalf("the page shows stdout %q from %q, want hello-from-dashboard from worker-a", stdout, worker)
	}
	// The REST API agrees with the page.
	if tk := l.waitFinal(taskID); tk.Cmd != cmd || strings.TrimSpace(tk.Stdout) != "hello-from-dashboard" {
		t.Fatalf("GET /tasks/%s: %+v", taskID, tk)
	}
	for _, ev := range []string{"task.queued", "task.assigned", "task.finished"} {
		p.visible("see "+ev+" in the live stream", fmt.Sprintf(`#event-list li[data-type=%q][data-task-id=%q]`, ev, taskID))
	}
	p.visible("see the rotation move on to worker-b", `#workers-body tr[data-worker-id="worker-b"][data-next="true"]`)
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](`document.querySelector('#workers-body tr[data-worker-id="worker-a"] td.completed').textContent === "1"`)); err != nil {
		t.Fatalf("worker-a's completed count never showed 1: %v", err)
	}
}

// seeLabelsAndWaiting checks that the page shows worker-b's labels, and a
// task no connected worker can run, flagged in the queue panel with the
// reason, until it is canceled.
func (p *dashboardPage) seeLabelsAndWaiting() {
	t, l := p.t, p.l
	t.Helper()
	p.visible("see worker-b's labels", `#workers-body tr[data-worker-id="worker-b"][data-labels="gpu=nvidia,zone=eu"]`)
	tk, _, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo never", Priority: 1, Requires: map[string]string{"zone": "mars"}})
	if err != nil {
		t.Fatalf("submitting a task for zone=mars: %v", err)
	}
	l.watch(tk.ID)
	p.visible("see the queue panel flag a task nobody can run", `#queue-section[data-waiting="true"] #waiting-list li[data-requires="zone=mars"][data-queued="1"]`)
	if why := p.text(`#waiting-list li[data-requires="zone=mars"] .why`); !strings.Contains(why, "zone=mars") {
		t.Fatalf("the waiting group says %q, want it to name zone=mars", why)
	}
	if got := p.text(`#queue-priorities td[data-priority="1"]`); strings.TrimSpace(got) != "1" {
		t.Fatalf("priority 1 shows %q queued, want 1", got)
	}
	if _, code, err := l.api.Cancel(l.ctx, tk.ID); err != nil {
		t.Fatalf("cancel: %d %v", code, err)
	}
	p.visible("see the flag go once the task is canceled", `#queue-section[data-waiting="false"]`)
}

// screenshot saves what the browser shows as name in $ARTIFACTS_DIR, or
// integration/artifacts.
func screenshot(t *testing.T, bctx context.Context, name string) {
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = "artifacts"
	}
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	path, err := filepath.Abs(filepath.Join(dir, name))
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err != nil {
		t.Errorf("saving the screenshot: %v", err)
		return
	}
	t.Logf("screenshot of the dashboard: %s", path)
}
