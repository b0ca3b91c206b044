package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// The dashboard, driven by a real headless browser against a master and two
// workers: it lists the workers in rotation order and marks the next one,
// runs a command typed into its form and shows the output, and shows the
// task in the live event stream. A screenshot is saved as an artifact.
func TestDashboard(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("this test drives %s, which is missing: install Debian's chromium (apt-get install chromium; .ci/run does): %v", chromiumPath, err)
	}
	l := newLab(t)
	l.startWorker("worker-a", 1)
	l.startWorker("worker-b", 2)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // CI runs as root, where chromium's sandbox cannot start
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(l.ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()
	// The first call starts the browser, which lives as long as that call's
	// context: bctx, not one with a timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	defer screenshot(t, bctx) // also when the test fails: it shows why
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	visible := func(what, sel string) {
		t.Helper()
		do(what, chromedp.WaitVisible(chromedp.CSS(sel)))
	}

	do("open the page", chromedp.Navigate(l.api.Base+"/"))
	visible("see worker-b", `#workers-body tr[data-worker-id="worker-b"]`)
	visible("see the event stream connected", `#conn-status[data-state="live"]`)
	order, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#workers-body tr')].map(r => r.dataset.workerId)`))
	if err != nil || strings.Join(order, ",") != "worker-a,worker-b" {
		t.Fatalf("workers on the page: %v (%v), want worker-a,worker-b in rotation order", order, err)
	}
	visible("see worker-a marked next", `#workers-body tr[data-worker-id="worker-a"][data-next="true"]`)

	const cmd = "echo hello-from-dashboard"
	do("submit through the form",
		chromedp.SendKeys(chromedp.CSS(`#cmd-input`), cmd),
		chromedp.Click(chromedp.CSS(`#submit-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#task-result[data-status="succeeded"]`)),
	)
	stdout, worker := text(`#task-stdout`), text(`#task-worker`)
	attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(`#task-result`), "data-task-id"))
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
		visible("see "+ev+" in the live stream", fmt.Sprintf(`#event-list li[data-type=%q][data-task-id=%q]`, ev, taskID))
	}
	visible("see the rotation move on to worker-b", `#workers-body tr[data-worker-id="worker-b"][data-next="true"]`)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('#workers-body tr[data-worker-id="worker-a"] td.completed').textContent === "1"`)); err != nil {
		t.Fatalf("worker-a's completed count never showed 1: %v", err)
	}
}

// screenshot saves what the browser shows as dashboard.png in
// $ARTIFACTS_DIR, or integration/artifacts.
func screenshot(t *testing.T, bctx context.Context) {
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
	path, err := filepath.Abs(filepath.Join(dir, "dashboard.png"))
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
