package integration

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// gpu is the label the labelled workers of these tests and of compose.yaml's
// worker-gpu group declare.
var gpu = map[string]string{"gpu": "nvidia"}

// TestScheduling checks issue 11's scheduling from the outside, on one lab:
// a plain group and a labelled group of workers (routing by label, round
// robin among the workers that can run a task, a task nobody can run
// waiting and saying why), priorities on a busy worker, a delayed run and a
// retry policy with its backoff, then a retry by hand; and a worker with
// malformed labels refusing to start.
func TestScheduling(t *testing.T) {
	l := newLab(t)
	l.startWorker("plain-1", 1)
	l.startWorker("plain-2", 1)
	l.startWorker("gpu-1", 1, withWorkerEnv("WORKER_LABELS", "gpu=nvidia"))
	l.startWorker("gpu-2", 1, withWorkerEnv("WORKER_LABELS", "gpu=nvidia"))
	rotation := []string{"plain-1", "plain-2", "gpu-1", "gpu-2"}
	if got := l.waitWorkers(len(rotation)).IDs(); !slices.Equal(got, rotation) {
		t.Fatalf("rotation = %v, want %v", got, rotation)
	}

	// Tasks requiring gpu=nvidia run on the gpu workers only, taking turns;
	// plain tasks go round the whole rotation; a task requiring a label no
	// worker has waits, says why, and holds up nothing.
	t.Run("routing", func(t *testing.T) {
		ws, err := l.api.Workers(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws.Workers {
			want := map[string]string{}
			if strings.HasPrefix(w.ID, "gpu-") {
				want = gpu
			}
			if !maps.Equal(w.Labels, want) {
				t.Errorf("GET /workers: %s has labels %v, want %v", w.ID, w.Labels, want)
			}
		}

		mars := submitTask(t, l, client.Submit{Cmd: "echo mars", Requires: map[string]string{"zone": "mars"}})

		var ran []string
		for i := range 6 {
			tk := runTask(t, l, client.Submit{Cmd: fmt.Sprintf("echo gpu-%d", i), Requires: gpu})
			if tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("gpu-%d\n", i) || !maps.Equal(tk.Requires, gpu) {
				t.Errorf("gpu task %d: %s, stdout %q, requires %v", i, tk.Status, tk.Stdout, tk.Requires)
			}
			ran = append(ran, tk.Worker())
		}
		for i, w := range ran {
			if !strings.HasPrefix(w, "gpu-") {
				t.Errorf("gpu task %d ran on %s, a worker without gpu=nvidia (all: %v)", i, w, ran)
			}
			if i > 0 && w == ran[i-1] {
				t.Errorf("gpu tasks ran on %v: %s twice in a row, want the gpu workers in turn", ran, w)
			}
		}

		seen := map[string]int{}
		for i := range len(rotation) {
			tk := runTask(t, l, client.Submit{Cmd: fmt.Sprintf("echo plain-%d", i)})
			if tk.Status != "succeeded" {
				t.Errorf("plain task %d: %s on %s", i, tk.Status, tk.Worker())
			}
			seen[tk.Worker()]++
		}
		for _, w := range rotation {
			if seen[w] != 1 {
				t.Errorf("%d plain tasks one after another ran on %v, want one on each worker of %v", len(rotation), seen, rotation)
				break
			}
		}

		// Ten tasks later, the zone=mars task still waits, and says for what.
		got, err := l.api.Get(l.ctx, mars.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != "queued" || got.Attempts != 0 || !strings.Contains(got.WaitingFor, "zone=mars") {
			t.Errorf("zone=mars task: %s after %d attempts, waiting_for %q; want queued, never run, waiting for zone=mars", got.Status, got.Attempts, got.WaitingFor)
		}
		q, err := l.api.Queue(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(q.Groups, func(g client.Group) bool { return g.Requires["zone"] == "mars" })
		if i < 0 || q.Groups[i].Queued != 1 || q.Groups[i].Eligible != 0 || !strings.Contains(q.Groups[i].WaitingFor, "zone=mars") {
			t.Errorf("GET /queue: %+v; want a group of 1 task requiring zone=mars, no eligible worker, waiting for zone=mars", q)
		}
		if tk, code, err := l.api.Cancel(l.ctx, mars.ID); err != nil || code != http.StatusOK || tk.Status != "canceled" {
			t.Errorf("DELETE the zone=mars task: %d %s, %v; want 200 canceled", code, tk.Status, err)
		}
	})

	// One worker of one slot, busy; priority-5 tasks queued, then priority-1
	// ones: once it is free, the priority-1 tasks run first, each level
	// oldest first. A label of its own keeps the other workers out of it.
	t.Run("priority", func(t *testing.T) {
		l.startWorker("solo", 1, withWorkerEnv("WORKER_LABELS", "lane=solo"))
		lane := map[string]string{"lane": "solo"}
		busy := submitTask(t, l, client.Submit{Cmd: "sleep 300", Requires: lane})
		waitTask(t, l, busy.ID, time.Minute, "the blocker to run on solo", func(tk client.Task) bool {
			return tk.Status == "running" && tk.Worker() == "solo"
		})
		var low, high []string
		for i := range 3 {
			low = append(low, submitTask(t, l, client.Submit{Cmd: fmt.Sprintf("echo p5-%d", i), Priority: 5, Requires: lane}).ID)
		}
		for i := range 3 {
			high = append(high, submitTask(t, l, client.Submit{Cmd: fmt.Sprintf("echo p1-%d", i), Priority: 1, Requires: lane}).ID)
		}
		q, err := l.api.Queue(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if q.ByPriority[1] != 3 || q.ByPriority[5] != 3 {
			t.Errorf("GET /queue by priority: %v, want 3 at 1 and 3 at 5", q.ByPriority)
		}

		if _, code, err := l.api.Cancel(l.ctx, busy.ID); err != nil || code != http.StatusOK {
			t.Fatalf("DELETE the blocker: %d, %v", code, err)
		}
		want := append(slices.Clone(high), low...)
		done := map[string]client.Task{}
		for _, id := range want {
			tk := waitTask(t, l, id, time.Minute, "it to finish", client.Task.Final)
			if tk.Status != "succeeded" || tk.Worker() != "solo" || len(tk.History) != 1 || tk.History[0].AssignedAt == nil {
				t.Fatalf("task %q: %s on %s, history %s; want succeeded on solo, once", tk.Cmd, tk.Status, tk.Worker(), trail(tk))
			}
			done[id] = tk
		}
		got := slices.SortedFunc(maps.Keys(done), func(a, b string) int {
			return done[a].History[0].AssignedAt.Compare(*done[b].History[0].AssignedAt)
		})
		if !slices.Equal(got, want) {
			t.Errorf("solo ran %v, want %v (priority 1 first, each level oldest first)", cmds(done, got), cmds(done, want))
		}
	})

	// delay 3s: scheduled until then, not started a moment earlier, then
	// run; a delayed task canceled before its time never runs.
	t.Run("delay", func(t *testing.T) {
		// A scheduled task can be canceled, and then never runs.
		never := submitTask(t, l, client.Submit{Cmd: "echo never", Delay: "1s"})
		if got, code, err := l.api.Cancel(l.ctx, never.ID); err != nil || code != http.StatusOK || got.Status != "canceled" {
			t.Fatalf("DELETE a scheduled task: %d %s, %v; want 200 canceled", code, got.Status, err)
		}
		tk := submitTask(t, l, client.Submit{Cmd: "echo later", Delay: "3s"})
		if tk.Status != "scheduled" || tk.RunAt == nil || tk.RunAt.Before(tk.CreatedAt.Add(3*time.Second)) {
			t.Fatalf("delayed task: %s, run_at %v, created %v; want scheduled to run 3s after its creation", tk.Status, tk.RunAt, tk.CreatedAt)
		}
		done := waitTask(t, l, tk.ID, time.Minute, "the delayed task to finish", client.Task.Final)
		if done.Status != "succeeded" || done.Stdout != "later\n" || len(done.History) != 1 || done.History[0].AssignedAt == nil {
			t.Fatalf("delayed task: %s, stdout %q, history %s; want succeeded once", done.Status, done.Stdout, trail(done))
		}
		if early := tk.CreatedAt.Add(3 * time.Second).Sub(*done.History[0].AssignedAt); early > 0 {
			t.Errorf("delayed task assigned %s before its 3s were up (created %v, assigned %v)", early, tk.CreatedAt, *done.History[0].AssignedAt)
		}
		t.Logf("assigned %s after its creation", done.History[0].AssignedAt.Sub(tk.CreatedAt).Round(time.Millisecond))

		// The canceled one's run time has passed meanwhile: it never ran.
		if got, err := l.api.Get(l.ctx, never.ID); err != nil || got.Status != "canceled" || got.Attempts != 0 {
			t.Errorf("canceled scheduled task, after its run time: %s after %d attempts, %v; want canceled, never run", got.Status, got.Attempts, err)
		}
	})

	// exit 3 with retry_on failed: 3 attempts, scheduled between them for
	// the backoff (1s, then 2s, jitter aside), then failed for good. A retry
	// by hand runs it again with a fresh budget of max_attempts.
	t.Run("retry", func(t *testing.T) {
		tk := submitTask(t, l, client.Submit{Cmd: "echo try; exit 3", RetryOn: []string{"failed"}, MaxAttempts: 3, Backoff: "1s", MaxBackoff: "2s"})
		failed := waitRetries(t, l, tk.ID, 3)
		checkBackoff(t, failed, 0)

		again, code, err := l.api.Retry(l.ctx, tk.ID)
		if err != nil || code != http.StatusAccepted || again.Final() {
			t.Fatalf("POST /tasks/%s/retry: %d %s, %v; want 202 and the task live again", tk.ID, code, again.Status, err)
		}
		// Live again, it cannot be retried until it is final once more.
		if _, code, err := l.api.Retry(l.ctx, tk.ID); err != nil || code != http.StatusConflict {
			t.Errorf("a second retry while it runs: %d, %v; want 409", code, err)
		}
		rerun := waitRetries(t, l, tk.ID, 6)
		for i, a := range failed.History {
			if b := rerun.History[i]; b.Outcome != a.Outcome || !b.AssignedAt.Equal(*a.AssignedAt) {
				t.Errorf("retry changed delivery %d of the history: %+v, was %+v", i+1, b, a)
			}
		}
		checkBackoff(t, rerun, 3)
	})

	// A worker whose WORKER_LABELS are malformed does not start: it says
	// why and exits, rather than serving with labels nobody meant.
	t.Run("bad-labels", func(t *testing.T) {
		c := l.startWorker("bad-labels", 1, withWorkerEnv("WORKER_LABELS", "gpu"), refusedWorker())
		t.Logf("bad-labels: %s", l.waitLog("bad-labels", regexp.MustCompile(`WORKER_LABELS[^\n]*`)))
		ctx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
		defer cancel()
		err := client.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
			st, err := c.State(ctx)
			if err != nil {
				return false, err
			}
			if !st.Running && st.ExitCode == 0 {
				return false, fmt.Errorf("it exited with 0")
			}
			return !st.Running, nil
		})
		if err != nil {
			t.Fatalf("worker with WORKER_LABELS=gpu: %v; want it to exit with an error", err)
		}
		if ws, err := l.api.Workers(l.ctx); err != nil || ws.Has("bad-labels") {
			t.Errorf("GET /workers lists bad-labels (%v): want it never registered", err)
		}
	})
}

// submitTask posts a task and fails the test unless the master accepted it.
func submitTask(t *testing.T, l *lab, s client.Submit) client.Task {
	t.Helper()
	tk, code, err := l.api.SubmitWith(l.ctx, s)
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("POST /tasks %q: %d, %v", s.Cmd, code, err)
	}
	l.watch(tk.ID)
	return tk
}

// runTask submits a task and waits until it is final.
func runTask(t *testing.T, l *lab, s client.Submit) client.Task {
	t.Helper()
	return waitTask(t, l, submitTask(t, l, s).ID, time.Minute, "it to finish", client.Task.Final)
}

// waitRetries waits for a task of `exit 3` with retry_on failed to end
// after attempts deliveries, each failed with exit code 3, and checks that
// it was scheduled between them.
func waitRetries(t *testing.T, l *lab, id string, attempts int) client.Task {
	t.Helper()
	scheduled := 0
	tk := waitTask(t, l, id, time.Minute, fmt.Sprintf("it to fail after %d attempts", attempts), func(tk client.Task) bool {
		if tk.Status == "scheduled" && tk.RunAt != nil {
			scheduled++
		}
		return tk.Final() && tk.Attempts >= attempts
	})
	if tk.Status != "failed" || tk.Attempts != attempts || len(tk.History) != attempts {
		t.Fatalf("task: %s after %d attempts, history %s; want failed after %d", tk.Status, tk.Attempts, trail(tk), attempts)
	}
	for _, a := range tk.History {
		if a.Outcome != "failed" || a.ExitCode == nil || *a.ExitCode != 3 || a.AssignedAt == nil || a.Duplicate {
			t.Fatalf("task history %s: want every delivery failed with exit code 3", trail(tk))
		}
	}
	if scheduled == 0 {
		t.Errorf("task never seen scheduled with a run_at between its attempts")
	}
	return tk
}

// checkBackoff checks that the deliveries of a retried task from the one
// at index from on were spaced by its backoff, doubled each time: at least
// 0.8 s, then 1.6 s (80%, for the jitter). The cap (max_backoff 2s) keeps
// the test short and the third wait at 2s at most, and is not checked.
func checkBackoff(t *testing.T, tk client.Task, from int) {
	t.Helper()
	least := 800 * time.Millisecond
	for i := from + 1; i < len(tk.History); i++ {
		gap := tk.History[i].AssignedAt.Sub(*tk.History[i-1].AssignedAt)
		t.Logf("attempt %d assigned %s after attempt %d", i+1, gap.Round(time.Millisecond), i)
		if gap < least {
			t.Errorf("attempt %d assigned %s after attempt %d, want at least %s (backoff 1s doubled each time, less 20%% jitter)", i+1, gap, i, least)
		}
		least = min(2*least, 1600*time.Millisecond)
	}
}

// cmds lists the commands of tasks by ID, in the order of ids.
func cmds(tasks map[string]client.Task, ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, tasks[id].Cmd)
	}
	return out
}
