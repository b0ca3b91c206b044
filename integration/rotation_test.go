package integration

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// With N workers and N*K tasks submitted one after another, each worker runs
// exactly K, and task i goes to the worker at place i mod N in the rotation.
// Each worker has K slots, so none is ever busy when its turn comes.
func TestRoundRobinByWorkerID(t *testing.T) {
	const n, k = 3, 4
	l := newLab(t)
	order := []string{"w2", "w3", "w1"} // registration order, not ID order, makes the rotation
	for _, id := range order {
		l.startWorker(id, k)
	}
	if got := l.waitWorkers(n).IDs(); !slices.Equal(got, order) {
		t.Fatalf("rotation = %v, want %v", got, order)
	}

	var ids []string
	for i := range n * k {
		ids = append(ids, l.submit(fmt.Sprintf("echo task-%d", i)).ID)
	}
	count := map[string]int{}
	for i, id := range ids {
		tk := l.waitFinal(id)
		if tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("task-%d\n", i) {
			t.Errorf("task %d: %s, stdout %q", i, tk.Status, tk.Stdout)
		}
		if want := order[i%n]; tk.Worker() != want {
			t.Errorf("task %d ran on %s, want %s (rotation %v)", i, tk.Worker(), want, order)
		}
		if tk.Attempts != 1 {
			t.Errorf("task %d: %d attempts, want 1 (each task is sent to exactly one worker)", i, tk.Attempts)
		}
		count[tk.Worker()]++
	}
	for _, id := range order {
		if count[id] != k {
			t.Errorf("%s ran %d tasks, want %d (all: %v)", id, count[id], k, count)
		}
	}
	ws, err := l.api.Workers(l.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws.Workers {
		if w.Completed != k || w.Running != 0 {
			t.Errorf("GET /workers: %s completed %d running %d, want %d and 0", w.ID, w.Completed, w.Running, k)
		}
	}
}

// A task accepted while no worker is connected waits in the queue, and runs
// once a worker joins.
func TestTaskQueuedWithoutWorkersRunsWhenOneJoins(t *testing.T) {
	l := newLab(t)
	tk := l.submit("echo waited")
	if got, err := l.api.Get(l.ctx, tk.ID); err != nil || got.Status != "queued" {
		t.Fatalf("with no workers: %+v, %v; want queued", got, err)
	}
	l.startWorker("late", 1)
	done := l.waitFinal(tk.ID)
	if done.Status != "succeeded" || done.Worker() != "late" || done.Stdout != "waited\n" {
		t.Fatalf("task = %s on %s, stdout %q", done.Status, done.Worker(), done.Stdout)
	}
}

// A stopped worker leaves the rotation while the others keep serving; when
// it starts again it rejoins at the end of the rotation.
func TestStoppedWorkerLeavesRotationAndRejoins(t *testing.T) {
	l := newLab(t)
	for _, id := range []string{"w1", "w2", "w3"} {
		l.startWorker(id, 1)
	}
	stop := 10 * time.Second
	if err := l.workers["w2"].Stop(l.ctx, &stop); err != nil {
		t.Fatal(err)
	}
	if got := l.waitWorkers(2).IDs(); !slices.Equal(got, []string{"w1", "w3"}) {
		t.Fatalf("rotation after stopping w2 = %v", got)
	}
	count := map[string]int{}
	for i := range 6 {
		tk := l.waitFinal(l.submit(fmt.Sprintf("echo %d", i)).ID)
		if tk.Status != "succeeded" {
			t.Fatalf("task %d: %s", i, tk.Status)
		}
		count[tk.Worker()]++
	}
	if count["w1"] != 3 || count["w3"] != 3 {
		t.Fatalf("tasks per worker with w2 stopped = %v, want w1=3 w3=3", count)
	}

	if err := l.workers["w2"].Start(l.ctx); err != nil {
		t.Fatal(err)
	}
	if got := l.waitWorkers(3).IDs(); !slices.Equal(got, []string{"w1", "w3", "w2"}) {
		t.Fatalf("rotation after w2 came back = %v, want w2 at the end", got)
	}
	ran := []string{}
	for i := range 3 {
		ran = append(ran, l.waitFinal(l.submit(fmt.Sprintf("echo again %d", i)).ID).Worker())
	}
	if !slices.Contains(ran, "w2") {
		t.Fatalf("rejoined w2 got no task: %v", ran)
	}
}

// A worker killed in the middle of a task: the master sees its stream end,
// takes it out of the rotation and the task runs on another worker.
func TestKilledWorkersTaskRunsElsewhere(t *testing.T) {
	l := newLab(t)
	l.startWorker("doomed", 1)
	l.startWorker("survivor", 1)
	// Long on doomed only (tasks see the worker's WORKER_ID): it must
	// still run when the kill lands, however slow the machine; elsewhere
	// it ends at once.
	tk := l.submit(`if [ "$WORKER_ID" = doomed ]; then sleep 60; fi; echo finished`)
	if tk.ID == "" {
		t.Fatal("no task")
	}
	// The first task goes to the first worker in the rotation.
	waitStatus(t, l, tk.ID, "running")
	if got, _ := l.api.Get(l.ctx, tk.ID); got.Worker() != "doomed" {
		t.Fatalf("task went to %s, want doomed", got.Worker())
	}
	if out, err := exec.Command("docker", "kill", l.workers["doomed"].GetContainerID()).CombinedOutput(); err != nil { // SIGKILL: no goodbye
		t.Fatalf("docker kill: %v\n%s", err, out)
	}
	done := l.waitFinal(tk.ID)
	if done.Status != "succeeded" || done.Worker() != "survivor" || done.Attempts != 2 || !strings.Contains(done.Stdout, "finished") {
		t.Fatalf("task = %s on %s after %d attempts, stdout %q", done.Status, done.Worker(), done.Attempts, done.Stdout)
	}
}

func waitStatus(t *testing.T, l *lab, id, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
	defer cancel()
	var last client.Task
	err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		var err error
		last, err = l.api.Get(ctx, id)
		return err == nil && last.Status == status, nil
	})
	if err != nil {
		t.Fatalf("task %s: status %q, want %q: %v", id, last.Status, status, err)
	}
}
