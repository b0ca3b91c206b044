package integration

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// Defaults of compose.yaml that docs/labs.md promises its timings from.
const (
	// labWorkerTimeout is MASTER_WORKER_TIMEOUT: a paused or cut-off worker
	// is dropped within it, and a restarted master waits that long for
	// running tasks' workers to claim them.
	labWorkerTimeout = 10 * time.Second
	// labRejoin bounds how soon a thawed or reconnected worker is back: its
	// gRPC keepalive notices the dead connection within 15 s, then it
	// reconnects within WORKER_RECONNECT_MAX (5 s).
	labRejoin = 30 * time.Second
)

// TestLabs runs every exercise of docs/labs.md, in the guide's order, on the
// real compose.yaml with the guide's defaults, through the same
// docker/lab.sh commands the make targets run, and checks through the REST
// API that what the guide says happens does. One compose project serves all
// the exercises, as one class's lab would.
func TestLabs(t *testing.T) {
	cl := startComposeLab(t, 3)
	l := cl.l

	// Exercise 1: make scale WORKERS=4, then WORKERS=2, then back to 3.
	t.Run("scale", func(t *testing.T) {
		before := l.waitWorkers(3).IDs()
		cl.run(t, "scale", "4")
		up := l.waitWorkers(4).IDs()
		if !slices.Equal(up[:3], before) || slices.Contains(before, up[3]) {
			t.Fatalf("after scale 4 the rotation is %v, want %v and a newcomer at the end", up, before)
		}
		if want := regexp.MustCompile(`^` + cl.project + `[-_]worker[-_]4$`); !want.MatchString(up[3]) {
			t.Errorf("the new worker is %q, want worker 4 of the project", up[3])
		}

		// One task at a time goes to the worker marked next, then round the rotation.
		ws, err := l.api.Workers(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := -1
		for i, w := range ws.Workers {
			if w.Next {
				start = i
			}
		}
		if start < 0 {
			t.Fatalf("no worker is marked next: %+v", ws)
		}
		for i := range 4 {
			tk := l.waitFinal(l.submit(fmt.Sprintf("echo rotation-%d", i)).ID)
			if want := up[(start+i)%4]; tk.Status != "succeeded" || tk.Worker() != want {
				t.Errorf("task %d: %s on %s, want succeeded on %s", i, tk.Status, tk.Worker(), want)
			}
		}

		cl.run(t, "scale", "2")
		down := l.waitWorkers(2).IDs()
		if !isSubsequence(down, up) {
			t.Errorf("after scale 2 the rotation is %v: not in the order of %v", down, up)
		}
		cl.run(t, "scale", "3")
		again := l.waitWorkers(3).IDs()
		if !slices.Equal(again[:2], down) {
			t.Errorf("after scale 3 the rotation is %v, want %v and a newcomer at the end", again, down)
		}
	})

	// Exercise 2: make long-task, make kill-worker.
	t.Run("kill-worker", func(t *testing.T) {
		id, victim := cl.longTask(t, 10)
		killed := time.Now()
		if out := cl.run(t, "kill-worker"); !strings.Contains(out, victim) {
			t.Fatalf("kill-worker did not pick %s, the worker running the task:\n%s", victim, out)
		}
		// Its connection closes: dropped at once, not after a timeout.
		waitWorkerGone(t, l, victim, 3*time.Second)
		t.Logf("killed %s dropped after %s", victim, time.Since(killed).Round(100*time.Millisecond))
		// Its task waits half a worker timeout for a claim, then runs for
		// 10 s elsewhere.
		tk := waitTask(t, l, id, labWorkerTimeout+10*time.Second+time.Minute, "the killed worker's task to finish", client.Task.Final)
		if tk.Status != "succeeded" || tk.Stdout != "slept 10s\n" || tk.Attempts != 2 || len(tk.History) != 2 {
			t.Fatalf("task: %s, stdout %q, history %s; want succeeded after 2 deliveries", tk.Status, tk.Stdout, trail(tk))
		}
		if h := tk.History[0]; h.Outcome != "lost" || h.WorkerID != victim {
			t.Errorf("first delivery: %s on %s, want lost on %s", h.Outcome, h.WorkerID, victim)
		}
		if h := tk.History[1]; h.Outcome != "succeeded" || h.WorkerID == victim || tk.Worker() != h.WorkerID {
			t.Errorf("second delivery: %s on %s, want succeeded on another worker", h.Outcome, h.WorkerID)
		} else if h.AssignedAt == nil {
			t.Errorf("second delivery has no assigned_at")
		} else if h.AssignedAt.Sub(killed) >= labWorkerTimeout {
			// The claim window is half the timeout; a whole one means the
			// master waited for a killed worker as for a restarted master.
			t.Errorf("second delivery assigned at %v, %v after the kill; want within the worker timeout, %s", h.AssignedAt, h.AssignedAt.Sub(killed), labWorkerTimeout)
		} else {
			t.Logf("the killed worker's task ran again %s after the kill", h.AssignedAt.Sub(killed).Round(100*time.Millisecond))
		}
		// make scale WORKERS=3 starts the killed container again.
		cl.run(t, "scale", "3")
		if ids := l.waitWorkers(3).IDs(); ids[2] != victim {
			t.Errorf("after scale 3 the rotation is %v, want %s back at the end", ids, victim)
		}
	})

	// Exercise 3: make long-task, make pause-worker, make unpause-worker.
	t.Run("pause-worker", func(t *testing.T) {
		id, victim := cl.longTask(t, 12)
		paused := time.Now()
		if out := cl.run(t, "pause-worker"); !strings.Contains(out, victim) {
			t.Fatalf("pause-worker did not pick %s, the worker running the task:\n%s", victim, out)
		}
		t.Cleanup(func() { cl.lab("unpause-worker") }) // so that the project can be removed if the test ends early
		waitWorkerGone(t, l, victim, labWorkerTimeout+detectionSlack)
		t.Logf("paused %s dropped after %s", victim, time.Since(paused).Round(100*time.Millisecond))
		tk := waitTask(t, l, id, 12*time.Second+time.Minute, "the paused worker's task to finish elsewhere", client.Task.Final)
		checkRanTwice(t, tk, victim, "slept 12s\n")

		cl.run(t, "unpause-worker")
		waitWorkerBack(t, l, victim, labRejoin)
		if ids := l.waitWorkers(3).IDs(); ids[2] != victim {
			t.Errorf("rotation %v: want %s back at the end", ids, victim)
		}
		late := waitTask(t, l, id, labRejoin, "the thawed worker's late result, marked duplicate", func(tk client.Task) bool {
			return len(tk.History) == 2 && tk.History[0].Duplicate
		})
		checkLateDuplicate(t, late, tk, victim)
	})

	// Exercise 3, the other way round: make unpause-worker as soon as the
	// task runs elsewhere. Two deliveries race; one result wins, the other
	// is the duplicate.
	t.Run("pause-worker-early", func(t *testing.T) {
		id, victim := cl.longTask(t, 12)
		cl.run(t, "pause-worker")
		t.Cleanup(func() { cl.lab("unpause-worker") })
		waitWorkerGone(t, l, victim, labWorkerTimeout+detectionSlack)
		again := waitTask(t, l, id, 30*time.Second, "the second delivery to start", func(tk client.Task) bool {
			return tk.Status == "running" && tk.Attempts == 2
		})
		if again.Worker() == victim {
			t.Fatalf("second delivery went to the paused %s", victim)
		}
		cl.run(t, "unpause-worker")
		waitWorkerBack(t, l, victim, labRejoin)
		both := waitTask(t, l, id, 12*time.Second+time.Minute, "both deliveries to report", func(tk client.Task) bool {
			return tk.Final() && len(tk.History) == 2 && tk.History[0].Outcome != "lost" && tk.History[1].Outcome != "running"
		})
		winner := slices.IndexFunc(both.History, func(a client.Attempt) bool { return !a.Duplicate })
		if both.Status != "succeeded" || both.Stdout != "slept 12s\n" || both.Attempts != 2 || both.Duplicates() != 1 || winner < 0 ||
			both.History[winner].Outcome != "succeeded" || both.Worker() != both.History[winner].WorkerID {
			t.Fatalf("task: %s on %s, stdout %q, history %s; want succeeded on the worker whose delivery is not the one duplicate", both.Status, both.Worker(), both.Stdout, trail(both))
		}
		t.Logf("the race went to %s (the paused worker was %s)", both.Worker(), victim)
	})

	// Exercise 4: make long-task, make partition-worker, make heal-worker.
	t.Run("partition-worker", func(t *testing.T) {
		id, victim := cl.longTask(t, 12)
		cut := time.Now()
		if out := cl.run(t, "partition-worker"); !strings.Contains(out, victim) {
			t.Fatalf("partition-worker did not pick %s, the worker running the task:\n%s", victim, out)
		}
		t.Cleanup(func() { cl.lab("heal-worker") })
		waitWorkerGone(t, l, victim, labWorkerTimeout+detectionSlack)
		t.Logf("cut-off %s dropped after %s", victim, time.Since(cut).Round(100*time.Millisecond))
		tk := waitTask(t, l, id, 12*time.Second+time.Minute, "the cut-off worker's task to finish elsewhere", client.Task.Final)
		checkRanTwice(t, tk, victim, "slept 12s\n")

		cl.run(t, "heal-worker")
		healed := time.Now()
		waitWorkerBack(t, l, victim, labRejoin)
		t.Logf("healed %s back after %s", victim, time.Since(healed).Round(100*time.Millisecond))
		late := waitTask(t, l, id, labRejoin, "the reconnected worker's late result, marked duplicate", func(tk client.Task) bool {
			return len(tk.History) == 2 && tk.History[0].Duplicate
		})
		checkLateDuplicate(t, late, tk, victim)
	})

	// Exercise 5: make long-task, make restart-master.
	t.Run("restart-master", func(t *testing.T) {
		before := listAll(t, l, nil)
		id, worker := cl.longTask(t, 15)
		cl.run(t, "restart-master")
		l.waitWorkers(3)
		after := listAll(t, l, nil)
		for tid, b := range before {
			a, ok := after[tid]
			if !ok {
				t.Errorf("task %s (%q) is gone after the restart", tid, b.Cmd)
				continue
			}
			if a.Status != b.Status || a.Attempts != b.Attempts || a.Worker() != b.Worker() {
				t.Errorf("task %s (%q) changed across the restart: %s on %s after %d, was %s on %s after %d",
					tid, b.Cmd, a.Status, a.Worker(), a.Attempts, b.Status, b.Worker(), b.Attempts)
			}
		}
		if _, ok := after[id]; !ok || len(after) != len(before)+1 {
			t.Errorf("GET /tasks lists %d tasks after the restart, want the %d before and the long one", len(after), len(before))
		}
		// Its worker reconnects within one worker timeout and claims it: it
		// finishes where it ran, on its first delivery.
		tk := waitTask(t, l, id, 15*time.Second+time.Minute, "the long task to finish", client.Task.Final)
		if tk.Status != "succeeded" || tk.Stdout != "slept 15s\n" || tk.Worker() != worker || tk.Attempts != 1 {
			t.Errorf("long task: %s on %s, stdout %q, history %s; want succeeded on %s, delivered once", tk.Status, tk.Worker(), tk.Stdout, trail(tk), worker)
		}
	})

	// Exercise 6: make flood.
	t.Run("flood", func(t *testing.T) {
		const count = 200
		before := countStatus(t, l, "succeeded")
		done := map[string]int{}
		ws0, err := l.api.Workers(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws0.Workers {
			done[w.ID] = w.Completed
		}
		out := cl.run(t, "flood", fmt.Sprint(count))
		if want := fmt.Sprintf("flood: %d of %d finished", count, count); !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("succeeded=%d", count)) {
			t.Errorf("flood output lacks %q and succeeded=%d", want, count)
		}
		if got := countStatus(t, l, "succeeded"); got != before+count {
			t.Errorf("%d tasks succeeded, want %d before the flood + %d", got, before, count)
		}
		if n := countStatus(t, l, "queued,running"); n != 0 {
			t.Errorf("%d tasks still queued or running after the flood", n)
		}
		ws, err := l.api.Workers(l.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws.Workers {
			if w.Completed <= done[w.ID] {
				t.Errorf("worker %s ran none of the flood (completed %d before, %d after)", w.ID, done[w.ID], w.Completed)
			}
		}
	})

	// Exercise 7: make scale WORKERS=3 GPU_WORKERS=2, tasks that require
	// gpu=nvidia, one that requires a label nobody has, the gpu group
	// scaled to 0 and back to 1.
	t.Run("routing", func(t *testing.T) {
		plain := l.waitWorkers(3).IDs()
		cl.run(t, "scale", "3", "2")
		ws := l.waitWorkers(5)
		ids := ws.IDs()
		gpuName := regexp.MustCompile(`^` + cl.project + `[-_]worker-gpu[-_][12]$`)
		if !slices.Equal(ids[:3], plain) || !gpuName.MatchString(ids[3]) || !gpuName.MatchString(ids[4]) {
			t.Fatalf("after scale 3 2 the rotation is %v, want %v and two workers of worker-gpu at the end", ids, plain)
		}
		for i, w := range ws.Workers {
			want := map[string]string{}
			if i >= 3 {
				want = gpu
			}
			if !maps.Equal(w.Labels, want) {
				t.Errorf("GET /workers: %s has labels %v, want %v", w.ID, w.Labels, want)
			}
		}
		// The labelled group is the same worker: the same confinement.
		checkHardening(t, l.ctx, cl.project, map[string]int{"master": 1, "worker": 3, "worker-gpu": 2})
		if out := cl.run(t, "status"); !strings.Contains(out, "gpu=nvidia") || !strings.Contains(out, "gpu-2 ") {
			t.Errorf("status shows no gpu=nvidia label or no worker gpu-2")
		}

		// for i in 1 2 3 4; do curl -XPOST 'localhost:9092/tasks?wait=10s' -d '{..."requires":{"gpu":"nvidia"}}'
		var ran []string
		for i := range 4 {
			tk, code, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo render", Requires: gpu, Wait: 10 * time.Second})
			if err != nil || code != http.StatusAccepted || tk.Status != "succeeded" {
				t.Fatalf("gpu task %d: %d %s, %v; want it to succeed within 10s", i, code, tk.Status, err)
			}
			ran = append(ran, tk.Worker())
		}
		if !slices.Equal(ran, []string{ids[3], ids[4], ids[3], ids[4]}) && !slices.Equal(ran, []string{ids[4], ids[3], ids[4], ids[3]}) {
			t.Errorf("gpu tasks ran on %v, want the two gpu workers (%v) in turn", ran, ids[3:])
		}
		// Plain tasks one after another go round all five, gpu workers too.
		seen := map[string]int{}
		for i := range 5 {
			tk, code, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo plain", Wait: 10 * time.Second})
			if err != nil || code != http.StatusAccepted || tk.Status != "succeeded" {
				t.Fatalf("plain task %d: %d %s, %v; want it to succeed within 10s", i, code, tk.Status, err)
			}
			seen[tk.Worker()]++
		}
		for _, id := range ids {
			if seen[id] != 1 {
				t.Errorf("5 plain tasks ran on %v, want one on each of %v", seen, ids)
				break
			}
		}
		if _, code, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: "echo bad", Requires: map[string]string{"gpu": "nvidia a100"}}); code != http.StatusBadRequest || err == nil || !strings.Contains(err.Error(), "nvidia a100") {
			t.Errorf("requires gpu=\"nvidia a100\": %d, %v; want 400 saying what is wrong", code, err)
		}

		mars := submitTask(t, l, client.Submit{Cmd: "echo hello from mars", Requires: map[string]string{"zone": "mars"}})
		if tk, err := l.api.Get(l.ctx, mars.ID); err != nil || tk.Status != "queued" || tk.WaitingFor != "no connected worker has zone=mars" {
			t.Errorf("zone=mars task: %s, waiting_for %q, %v; want queued, waiting for a worker with zone=mars, as the guide shows", tk.Status, tk.WaitingFor, err)
		}
		if tk, code, err := l.api.Cancel(l.ctx, mars.ID); err != nil || code != http.StatusOK || tk.Status != "canceled" {
			t.Errorf("DELETE the zone=mars task: %d %s, %v; want 200 canceled", code, tk.Status, err)
		}

		// make scale WORKERS=3 GPU_WORKERS=0: a gpu task waits; GPU_WORKERS=1: it runs.
		cl.run(t, "scale", "3", "0")
		if got := l.waitWorkers(3).IDs(); !slices.Equal(got, plain) {
			t.Errorf("after scale 3 0 the rotation is %v, want %v", got, plain)
		}
		waiting := submitTask(t, l, client.Submit{Cmd: "echo finally", Requires: gpu})
		if tk, err := l.api.Get(l.ctx, waiting.ID); err != nil || tk.Status != "queued" || !strings.Contains(tk.WaitingFor, "gpu=nvidia") {
			t.Errorf("gpu task without gpu workers: %s, waiting_for %q, %v; want queued, waiting for gpu=nvidia", tk.Status, tk.WaitingFor, err)
		}
		cl.run(t, "scale", "3", "1")
		tk := waitTask(t, l, waiting.ID, labRejoin, "the gpu task to run once a gpu worker joins", client.Task.Final)
		if want := regexp.MustCompile(`^` + cl.project + `[-_]worker-gpu[-_]1$`); tk.Status != "succeeded" || !want.MatchString(tk.Worker()) {
			t.Errorf("gpu task: %s on %s, want succeeded on worker-gpu 1", tk.Status, tk.Worker())
		}
	})

	// Exercise 7, priorities: make scale WORKERS=1 GPU_WORKERS=0, make
	// long-task, then priority 5, 5, 5, 1, 1, 1: the 1s run first.
	t.Run("priorities", func(t *testing.T) {
		cl.run(t, "scale", "1", "0")
		l.waitWorkers(1)
		long, worker := cl.longTask(t, 10)
		var ids []string
		for _, p := range []int{5, 5, 5, 1, 1, 1} {
			ids = append(ids, submitTask(t, l, client.Submit{Cmd: fmt.Sprintf("echo priority %d", p), Priority: p}).ID)
		}
		if q, err := l.api.Queue(l.ctx); err != nil || q.ByPriority[1] != 3 || q.ByPriority[5] != 3 {
			t.Errorf("GET /queue: %+v, %v; want 3 tasks at priority 1 and 3 at 5", q, err)
		}
		tasks := map[string]client.Task{}
		for _, id := range ids {
			tk := waitTask(t, l, id, 10*time.Second+time.Minute, "it to finish", client.Task.Final)
			if tk.Status != "succeeded" || tk.Worker() != worker || len(tk.History) != 1 {
				t.Fatalf("task %q: %s on %s, history %s; want succeeded on %s, the one worker", tk.Cmd, tk.Status, tk.Worker(), trail(tk), worker)
			}
			tasks[id] = tk
		}
		if lt, err := l.api.Get(l.ctx, long); err != nil || lt.FinishedAt == nil || lt.FinishedAt.Before(tasks[ids[5]].CreatedAt) {
			t.Fatalf("the long task finished (%v) before the last priority task was submitted: nothing to prove (%v)", lt.FinishedAt, err)
		}
		got := slices.SortedFunc(maps.Keys(tasks), func(a, b string) int {
			return tasks[a].History[0].AssignedAt.Compare(*tasks[b].History[0].AssignedAt)
		})
		if want := append(slices.Clone(ids[3:]), ids[:3]...); !slices.Equal(got, want) {
			t.Errorf("the worker ran %v, want %v: priority 1 first, each level oldest first", cmds(tasks, got), cmds(tasks, want))
		}
	})

	// Exercise 7, retries: exit 3 with retry_on failed, max_attempts 3,
	// backoff 1s; then POST /tasks/{id}/retry.
	t.Run("retries", func(t *testing.T) {
		later := submitTask(t, l, client.Submit{Cmd: "date", Delay: "5s"})
		if later.Status != "scheduled" || later.RunAt == nil {
			t.Errorf("delayed task: %s, run_at %v; want scheduled with a run_at", later.Status, later.RunAt)
		}
		tk := submitTask(t, l, client.Submit{Cmd: "echo try; exit 3", RetryOn: []string{"failed"}, MaxAttempts: 3, Backoff: "1s"})
		failed := waitRetries(t, l, tk.ID, 3)
		checkBackoff(t, failed, 0)
		if again, code, err := l.api.Retry(l.ctx, tk.ID); err != nil || code != http.StatusAccepted {
			t.Fatalf("POST /tasks/%s/retry: %d %s, %v; want 202", tk.ID, code, again.Status, err)
		}
		if _, code, err := l.api.Retry(l.ctx, tk.ID); err != nil || code != http.StatusConflict {
			t.Errorf("a second retry while it runs: %d, %v; want 409", code, err)
		}
		waitRetries(t, l, tk.ID, 6)

		done := waitTask(t, l, later.ID, time.Minute, "the delayed task to finish", client.Task.Final)
		if done.Status != "succeeded" || len(done.History) != 1 || done.History[0].AssignedAt == nil {
			t.Fatalf("delayed task: %s, history %s; want succeeded once", done.Status, trail(done))
		}
		if after := done.History[0].AssignedAt.Sub(later.CreatedAt); after < 5*time.Second {
			t.Errorf("delayed task assigned %s after its creation, want no sooner than 5s", after)
		}
	})
}

// `make help` (a bare `make`) lists every target that has a ## comment,
// one line each, as the user reads it: help greps the Makefile's text, so a
// make variable in a comment came out unexpanded ("master + $(WORKERS)
// workers", found by running make in a new checkout).
func TestMakeHelp(t *testing.T) {
	cmd := exec.Command("make", "-s")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	targets := regexp.MustCompile(`(?m)^([a-z-]+):.*## `).FindAllStringSubmatch(string(makefile), -1)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(targets) < 10 || len(lines) != len(targets) {
		t.Fatalf("make lists %d lines for %d documented targets:\n%s", len(lines), len(targets), out)
	}
	for i, line := range lines {
		if f := strings.Fields(line); len(f) < 2 || f[0] != targets[i][1] {
			t.Errorf("line %d of make help is %q, want target %s and what it does", i+1, line, targets[i][1])
		}
		if strings.Contains(line, "$(") || strings.Contains(line, "${") {
			t.Errorf("make help shows an unexpanded variable: %q", line)
		}
	}
	// The README shows every target as `make TARGET ...`, and no other.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, tg := range targets {
		listed[tg[1]] = true
		if !regexp.MustCompile("`make " + tg[1] + "[` ]").Match(readme) {
			t.Errorf("README never shows `make %s`", tg[1])
		}
	}
	for _, m := range regexp.MustCompile("`make ([a-z-]+)").FindAllSubmatch(readme, -1) {
		if !listed[string(m[1])] {
			t.Errorf("README shows `make %s`, which make help does not list", m[1])
		}
	}
}

// The make targets of docs/labs.md run docker/lab.sh with their arguments:
// TestLabs runs the script, this checks the wiring (make -n prints the
// commands without running them).
func TestLabMakeTargets(t *testing.T) {
	tests := []struct {
		name string
		args []string // make's arguments
		want string   // the end of the command make runs
	}{
		{"status", []string{"status"}, "docker/lab.sh status"},
		{"scale", []string{"scale", "WORKERS=8"}, "docker/lab.sh scale 8"},
		{"scale GPU_WORKERS", []string{"scale", "WORKERS=3", "GPU_WORKERS=2"}, "docker/lab.sh scale 3 2"},
		{"kill-worker", []string{"kill-worker"}, "docker/lab.sh kill-worker"},
		{"kill-worker N", []string{"kill-worker", "N=2"}, "docker/lab.sh kill-worker 2"},
		{"kill-worker gpu-N", []string{"kill-worker", "N=gpu-2"}, "docker/lab.sh kill-worker gpu-2"},
		{"pause-worker", []string{"pause-worker", "N=3"}, "docker/lab.sh pause-worker 3"},
		{"unpause-worker", []string{"unpause-worker"}, "docker/lab.sh unpause-worker"},
		{"partition-worker", []string{"partition-worker", "N=1"}, "docker/lab.sh partition-worker 1"},
		{"heal-worker", []string{"heal-worker", "N=1"}, "docker/lab.sh heal-worker 1"},
		{"restart-master", []string{"restart-master"}, "docker/lab.sh restart-master"},
		{"stop-master", []string{"stop-master"}, "docker/lab.sh stop-master"},
		{"start-master", []string{"start-master"}, "docker/lab.sh start-master"},
		{"long-task", []string{"long-task"}, "docker/lab.sh long-task"},
		{"long-task SECS", []string{"long-task", "SECS=60"}, "docker/lab.sh long-task 60"},
		{"flood", []string{"flood"}, "docker/lab.sh flood 200"},
		{"flood COUNT", []string{"flood", "COUNT=50"}, "docker/lab.sh flood 50"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("make", append([]string{"-s", "-n", "ROUNDHOUSE_HTTP_PORT=19999"}, tt.args...)...)
			cmd.Dir = ".."
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make -n %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
			got := strings.TrimSpace(string(out))
			if !strings.HasSuffix(got, tt.want) || !strings.Contains(got, `API="http://127.0.0.1:19999"`) {
				t.Errorf("make %s runs\n\t%s\nwant it to end with %q and pass API for port 19999", strings.Join(tt.args, " "), got, tt.want)
			}
		})
	}
}

// The make targets send the API token that compose gives the master, read
// from .env as compose reads it: the last line that sets it, with or
// without `export ` and quotes (`make up`, `make demo` and the lab targets
// alike; lab.sh run by hand does the same). A master that wants the token
// answers make long-task; make runs in a directory of its own, with only
// .env and docker/ there.
func TestMakeSendsTheTokenOfDotEnv(t *testing.T) {
	const token = "dotenv-token-0123456789"
	master := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error": "got %q"}`, r.Header.Get("Authorization"))
			return
		}
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id": "t1", "status": "queued", "worker_id": null}`)
		case r.URL.Path == "/tasks/t1":
			fmt.Fprint(w, `{"id": "t1", "status": "running", "worker_id": "w1"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer master.Close()
	port := master.Listener.Addr().(*net.TCPAddr).Port
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	env := environWithout("MASTER_API_TOKEN", "API", "ROUNDHOUSE_HTTP_PORT")
	for _, tt := range dotenvSpellings("MASTER_API_TOKEN", token, "MASTER_WORKER_TOKEN") {
		t.Run(tt.name, func(t *testing.T) {
			dir := checkoutWithDotenv(t, root, tt.dotenv+"\n")
			cmd := exec.Command("make", "-s", "-f", filepath.Join(root, "Makefile"), "long-task", "SECS=1", fmt.Sprintf("ROUNDHOUSE_HTTP_PORT=%d", port))
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "task t1 running on w1") {
				t.Errorf("make long-task with .env %q: %v\n%s", tt.dotenv, err, out)
			}
		})
	}
}

// guideLab is a lab started from the real compose.yaml under a project of
// its own, and driven by docker/lab.sh as a student would drive it.
type guideLab struct {
	*deployment
	l *lab // only its API, token and context: the containers are compose's
}

// startComposeLab starts compose.yaml with n workers and waits until the
// master lists them. It removes the project, volumes included, at the end.
func startComposeLab(t *testing.T, n int) *guideLab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	d := startLab(t, ctx, labSpec{orch: composeOrchestrator(), prefix: "rhlabs", files: []string{"compose.yaml"}, workers: n, env: []string{
		"API=", // lab.sh derives it from the port
		// The guide's timings assume the defaults; pin them against the
		// caller's environment.
		"MASTER_WORKER_TIMEOUT=" + labWorkerTimeout.String(),
		"WORKER_SLOTS=1",
	}})
	cl := &guideLab{deployment: d, l: d.apiLab()}
	t.Cleanup(cl.l.dumpWatched)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if _, err := d.api.WaitWorkers(wctx, n); err != nil {
		t.Fatal(err)
	}
	return cl
}

// lab runs docker/lab.sh, as the make targets do.
func (cl *guideLab) lab(args ...string) (string, error) {
	return cl.command("bash", append([]string{"docker/lab.sh"}, args...)...)
}

// run runs docker/lab.sh, logs what it said and fails the test if it failed.
func (cl *guideLab) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cl.lab(args...)
	t.Logf("$ docker/lab.sh %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("docker/lab.sh %s: %v", strings.Join(args, " "), err)
	}
	return out
}

var longTaskLine = regexp.MustCompile(`task (\S+) running on (\S+) `)

// longTask runs `docker/lab.sh long-task secs` and returns the task's ID and
// the worker it runs on, as the script printed them.
func (cl *guideLab) longTask(t *testing.T, secs int) (id, worker string) {
	t.Helper()
	out := cl.run(t, "long-task", fmt.Sprint(secs))
	m := longTaskLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("long-task printed no running task")
	}
	cl.l.watch(m[1])
	tk, err := cl.l.api.Get(cl.l.ctx, m[1])
	if err != nil {
		t.Fatal(err)
	}
	if tk.Status != "running" || tk.Worker() != m[2] {
		t.Fatalf("long task is %s on %q, the script said running on %s", tk.Status, tk.Worker(), m[2])
	}
	return m[1], m[2]
}

// checkRanTwice checks a task whose first worker was lost: it succeeded on
// its second delivery, elsewhere.
func checkRanTwice(t *testing.T, tk client.Task, lost, stdout string) {
	t.Helper()
	if tk.Status != "succeeded" || tk.Stdout != stdout || tk.Attempts != 2 || len(tk.History) != 2 {
		t.Fatalf("task: %s, stdout %q, history %s; want succeeded after 2 deliveries", tk.Status, tk.Stdout, trail(tk))
	}
	if h := tk.History[0]; h.Outcome != "lost" || h.WorkerID != lost {
		t.Errorf("first delivery: %s on %s, want lost on %s", h.Outcome, h.WorkerID, lost)
	}
	if h := tk.History[1]; h.Outcome != "succeeded" || h.WorkerID == lost || h.Duplicate {
		t.Errorf("second delivery: %s on %s (duplicate %v), want succeeded on another worker", h.Outcome, h.WorkerID, h.Duplicate)
	}
}

// checkLateDuplicate checks that the lost worker's late result is recorded
// on its own delivery and changes nothing else.
func checkLateDuplicate(t *testing.T, late, final client.Task, lost string) {
	t.Helper()
	if h := late.History[0]; h.Outcome != "succeeded" || h.WorkerID != lost || h.Attempt != 1 {
		t.Errorf("late result: attempt %d on %s, %s; want attempt 1 on %s, succeeded", h.Attempt, h.WorkerID, h.Outcome, lost)
	}
	if late.Status != final.Status || late.Worker() != final.Worker() || late.Stdout != final.Stdout || late.Attempts != 2 || late.History[1].Duplicate {
		t.Errorf("the late result changed the task: now %s on %s, stdout %q, history %s", late.Status, late.Worker(), late.Stdout, trail(late))
	}
}

// countStatus counts the tasks GET /tasks?status= lists.
func countStatus(t *testing.T, l *lab, status string) int {
	t.Helper()
	return len(listAll(t, l, url.Values{"status": {status}, "limit": {"1000"}}))
}

// isSubsequence reports whether sub lists elements of all in their order.
func isSubsequence(sub, all []string) bool {
	i := 0
	for _, s := range sub {
		for i < len(all) && all[i] != s {
			i++
		}
		if i == len(all) {
			return false
		}
		i++
	}
	return true
}

// A worker the master lists that is no container of the lab (a remote
// worker joined with make worker-join) has no compose number N: lab.sh says
// so (long-task prints N=?, kill-worker refuses with the worker's name)
// rather than going on with an empty N. A docker that knows no container
// stands in for the real one.
func TestLabScriptWorkerWithoutContainer(t *testing.T) {
	master := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz":
			fmt.Fprint(w, `{"status":"ok"}`)
		case r.URL.Path == "/workers":
			fmt.Fprint(w, `{"workers":[{"id":"remote-1","state":"active","slots":1,"running":1,"completed":0,"labels":{},"next":true}]}`)
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","status":"queued","worker_id":null}`)
		case r.URL.Path == "/tasks/t1":
			fmt.Fprint(w, `{"id":"t1","status":"running","worker_id":"remote-1"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer master.Close()
	path := fakeDocker(t, "exit 1\n")
	tests := []struct {
		name string
		args []string
		ok   bool   // whether lab.sh succeeds
		want string // in what it prints
	}{
		{"long-task", []string{"long-task", "1"}, true, "task t1 running on remote-1 (N=?) for 1s"},
		{"kill-worker", []string{"kill-worker"}, false, `worker remote-1 is not a container of project "rhlabref"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("bash", append([]string{"docker/lab.sh"}, tt.args...)...)
			cmd.Dir = ".."
			cmd.Env = []string{path, "HOME=" + t.TempDir(), "API=" + master.URL, "MASTER_API_TOKEN=", "COMPOSE_PROJECT_NAME=rhlabref", "COMPOSE=docker compose"}
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.ok || !strings.Contains(string(out), tt.want) {
				t.Errorf("lab.sh %s: %v\n%s\nwant success %v and %q", strings.Join(tt.args, " "), err, out, tt.ok, tt.want)
			}
		})
	}
}

// The lab's project and API port set in .env are the ones the make targets
// and docker/lab.sh use, as a plain `docker compose` does: the Makefile
// exports both to compose, so its defaults must not shadow .env's (make up
// would publish another port than .env asks for, and make down or make
// status would look for another project). The shell's values win over
// .env's, as for compose. make and lab.sh run in a directory of their own,
// against a docker that records what compose is given.
func TestMakeTakesProjectAndPortOfDotEnv(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	env := environWithout("PATH", "COMPOSE", "COMPOSE_PROJECT_NAME", "ROUNDHOUSE_HTTP_PORT", "API")
	dir := checkoutWithDotenv(t, root, "COMPOSE_PROJECT_NAME=roundhouse\nROUNDHOUSE_HTTP_PORT=19191\nexport COMPOSE_PROJECT_NAME=\"rhdotenv\"\n")
	record := filepath.Join(dir, "compose-env")
	env = append(env, fakeDocker(t, `[ "$1" = compose ] && [ "$2" != version ] && echo "$COMPOSE_PROJECT_NAME $ROUNDHOUSE_HTTP_PORT" >"`+record+`"
exit 0
`))
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	makefile := filepath.Join(root, "Makefile")
	tests := []struct {
		name    string
		env     []string // more of the shell's
		project string
		port    string
	}{
		{".env", nil, "rhdotenv", "19191"},
		{"the shell's", []string{"COMPOSE_PROJECT_NAME=rhshell", "ROUNDHOUSE_HTTP_PORT=19292"}, "rhshell", "19292"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append(slices.Clip(env), tt.env...)
			os.Remove(record)
			run(env, "make", "-s", "-f", makefile, "down")
			got, _ := os.ReadFile(record)
			if want := tt.project + " " + tt.port + "\n"; string(got) != want {
				t.Errorf("make down ran compose with project and port %q, want %q", got, want)
			}
			if out, want := run(env, "make", "-s", "-n", "-f", makefile, "status"), `API="http://127.0.0.1:`+tt.port+`"`; !strings.Contains(out, want) {
				t.Errorf("make status runs\n%s\nwant %s", out, want)
			}
			if out, want := run(env, "bash", "docker/lab.sh", "help"), `(project "`+tt.project+`", API http://127.0.0.1:`+tt.port+`)`; !strings.Contains(out, want) {
				t.Errorf("docker/lab.sh by hand says\n%s\nwant %s", out, want)
			}
		})
	}
}
