package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// Live output, end to end: a worker container streams what a task prints
// while it runs, and GET /tasks/{id}/output?follow=true hands it on.

// follower records the events of one follow and when each arrived.
type follower struct {
	mu     sync.Mutex // protects events and at
	events []client.OutputEvent
	at     []time.Time
	done   chan error // gets FollowOutput's return
}

func follow(ctx context.Context, api *client.Client, id string) *follower {
	f := &follower{done: make(chan error, 1)}
	go func() { // owned by the test: it ends with the stream or ctx
		f.done <- api.FollowOutput(ctx, id, func(e client.OutputEvent) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.events, f.at = append(f.events, e), append(f.at, time.Now())
			return nil
		})
	}()
	return f
}

// wait returns the events once the follow has ended.
func (f *follower) wait(t *testing.T) ([]client.OutputEvent, []time.Time) {
	t.Helper()
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the follow did not end within 2 minutes")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events, f.at
}

// stdoutOf joins the stdout text of attempt n's output events.
func stdoutOf(events []client.OutputEvent, n int) string {
	var b strings.Builder
	for _, e := range events {
		if e.Type == client.OutputText && e.Stream == "stdout" && e.Attempt == n {
			b.WriteString(e.Text)
		}
	}
	return b.String()
}

func TestFollowOutput(t *testing.T) {
	l := newLab(t)
	l.startWorker("o1", 2)
	l.startWorker("o2", 2)

	t.Run("each line arrives while the task runs", func(t *testing.T) {
		// A line every 200 ms, then a gate that the test opens only once
		// every line has been followed: so the task ends after its last
		// line arrived, however slow the machine.
		tk := l.submit(`for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done; echo done >&2; ` + gate("lines"))
		f := follow(l.ctx, l.api, tk.ID)
		ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
		defer cancel()
		if err := client.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return strings.Contains(stdoutOf(f.events, 1), "line5\n") && indexOf(f.events, func(e client.OutputEvent) bool { return e.Stream == "stderr" }) >= 0, nil
		}); err != nil {
			t.Fatalf("line5 and the stderr line never arrived: %v", err)
		}
		running, err := l.api.Get(l.ctx, tk.ID)
		if err != nil || running.Status != "running" {
			t.Fatalf("task with every line followed: %s, %v; want running at its gate", running.Status, err)
		}
		l.openGate("lines", running.Worker())
		events, at := f.wait(t)
		final := l.waitFinal(tk.ID)
		if final.Status != "succeeded" || final.FinishedAt == nil {
			t.Fatalf("task %s, finished at %v", final.Status, final.FinishedAt)
		}
		// Containers share this machine's clock, so the task's finish time
		// compares with when each line reached us.
		for i := 1; i <= 5; i++ {
			line := fmt.Sprintf("line%d\n", i)
			j := indexOf(events, func(e client.OutputEvent) bool { return e.Type == client.OutputText && strings.Contains(e.Text, line) })
			if j < 0 {
				t.Fatalf("%q never arrived: %+v", line, events)
			}
			if !at[j].Before(*final.FinishedAt) {
				t.Errorf("%q arrived at %s, not before the task finished at %s", line, at[j].Format(time.StampMilli), final.FinishedAt.Format(time.StampMilli))
			}
		}
		if got := stdoutOf(events, 1); got != final.Stdout {
			t.Errorf("followed stdout %q, stored %q", got, final.Stdout)
		}
		if j := indexOf(events, func(e client.OutputEvent) bool { return e.Stream == "stderr" && e.Text == "done\n" }); j < 0 {
			t.Errorf("stderr did not arrive as stderr: %+v", events)
		}
		first, last := events[0], events[len(events)-1]
		if first.Type != client.OutputAttempt || first.Attempt != 1 || first.WorkerID != final.Worker() {
			t.Errorf("first event %+v, want attempt 1 on %s", first, final.Worker())
		}
		if last.Type != client.OutputEnd || last.Status != "succeeded" || last.ExitCode == nil || *last.ExitCode != 0 {
			t.Errorf("last event %+v, want end succeeded 0", last)
		}
	})

	t.Run("a re-run after a lost worker is announced", func(t *testing.T) {
		// The task waits at a gate that the test opens on the other worker
		// once the first one is killed: so attempt 1 is running at the kill,
		// however slow the machine.
		tk := l.submit(`echo start; ` + gate("rerun") + `; echo finish`)
		f := follow(l.ctx, l.api, tk.ID)
		waitStatus(t, l, tk.ID, "running")
		running, err := l.api.Get(l.ctx, tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		victim := running.Worker()
		// Once the first line is followed, the worker dies.
		if err := client.Poll(l.ctx, 50*time.Millisecond, func() (bool, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return strings.Contains(stdoutOf(f.events, 1), "start"), nil
		}); err != nil {
			t.Fatalf("the first line never arrived: %v", err)
		}
		l.docker("kill", l.workers[victim].GetContainerID())
		survivor := "o1"
		if victim == survivor {
			survivor = "o2"
		}
		l.openGate("rerun", survivor)
		events, _ := f.wait(t)
		final := l.waitFinal(tk.ID)
		end := indexOf(events, func(e client.OutputEvent) bool { return e.Type == client.OutputAttemptEnd && e.Attempt == 1 })
		next := indexOf(events, func(e client.OutputEvent) bool { return e.Type == client.OutputAttempt && e.Attempt == 2 })
		if end < 0 || next < end || events[end].Outcome != "lost" || events[end].WorkerID != victim {
			t.Fatalf("want attempt 1 ended lost on %s, then attempt 2; got %+v", victim, events)
		}
		if w := events[next].WorkerID; w == victim || w != final.Worker() {
			t.Errorf("attempt 2 announced on %s; the task ran it on %s, and %s was killed", w, final.Worker(), victim)
		}
		if got := stdoutOf(events, 2); got != "start\nfinish\n" || final.Status != "succeeded" {
			t.Errorf("attempt 2 followed %q; task %s", got, final.Status)
		}
	})

	t.Run("a stuck or vanished follower slows nothing", func(t *testing.T) {
		// 16 MB of output, followed by one reader that never reads and one
		// that leaves at once; meanwhile other tasks come and go.
		big := l.submit(`head -c 16000000 /dev/zero | tr '\0' x; echo`)
		stuck := stuckFollower(t, l, big.ID)
		defer stuck.Close()
		gone, cancel := context.WithCancel(l.ctx)
		vanished := follow(gone, l.api, big.ID)
		cancel()
		if err := <-vanished.done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("the vanished follower: %v", err)
		}
		var ids []string
		for i := range 20 {
			ids = append(ids, l.submit(fmt.Sprintf("echo small-%d", i)).ID)
		}
		for id, tk := range l.waitAllFinal(append(ids, big.ID)) {
			if tk.Status != "succeeded" {
				t.Errorf("task %s: %s", id, tk.Status)
			}
		}
		if _, err := l.api.Workers(l.ctx); err != nil {
			t.Errorf("the master does not answer with a stuck follower: %v", err)
		}
	})
}

// stuckFollower opens a follow of task id and never reads from it.
func stuckFollower(t *testing.T, l *lab, id string) net.Conn {
	t.Helper()
	host := strings.TrimPrefix(l.masterEndpoint(), "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, l.masterEndpoint()+"/tasks/"+id+"/output?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.apiToken != "" {
		req.Header.Set("Authorization", "Bearer "+l.apiToken)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	return conn
}

func indexOf(events []client.OutputEvent, match func(client.OutputEvent) bool) int {
	for i, e := range events {
		if match(e) {
			return i
		}
	}
	return -1
}
