package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
)

// TestCommands runs every command but run and events (followed in their own
// tests) against one cluster of a master and two workers, as a person
// (tables) and as a script (--json, exit codes).
func TestCommands(t *testing.T) {
	cl := startCluster(t, 2)
	env := cl.env()
	marker := fmt.Sprintf("cli-marker-%d", time.Now().UnixNano())

	// submit prints the ID alone, so id=$(roundhouse submit ...) works.
	r := cli(t, env, "submit", "--", "echo", marker, "&&", "echo", "to-stderr", ">&2")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(id) {
		t.Fatalf("submit: %v", r)
	}
	r = cli(t, env, "wait", id)
	if r.code != 0 || !strings.Contains(r.stdout, "task "+id+" succeeded (exit 0) on w") {
		t.Fatalf("wait: %v", r)
	}

	r = cli(t, env, "get", id)
	for _, want := range []string{"ID:", id, "Status:", "succeeded (exit 0)", "Attempts:", "1 of 3", "History:",
		"--- stdout ---\n" + marker + "\n", "--- stderr ---\nto-stderr\n"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("get: want %q in\n%v", want, r)
		}
	}
	var tk client.Task
	r = cli(t, env, "get", id, "--json") // a flag after the argument works too
	if err := json.Unmarshal([]byte(r.stdout), &tk); r.code != 0 || err != nil || tk.ID != id || tk.Status != "succeeded" ||
		tk.Stdout != marker+"\n" || len(tk.History) != 1 {
		t.Fatalf("get --json: %v (%v)", r, err)
	}

	r = cli(t, env, "logs", id)
	if r.code != 0 || r.stdout != marker+"\n" || r.stderr != "to-stderr\n" {
		t.Fatalf("logs: %v", r)
	}
	var o client.Output
	r = cli(t, env, "--json", "logs", id)
	if err := json.Unmarshal([]byte(r.stdout), &o); r.code != 0 || err != nil || o.TaskID != id || o.Stdout != marker+"\n" || o.Live {
		t.Fatalf("logs --json: %v (%v)", r, err)
	}
	r = cli(t, env, "logs", "-f", id) // a final task: its whole output, then the end
	if r.code != 0 || r.stdout != marker+"\n" || !strings.Contains(r.stderr, "to-stderr\n") {
		t.Fatalf("logs -f of a final task: %v", r)
	}

	// ls: the filters, a page and its cursor, every page.
	second := strings.TrimSpace(cli(t, env, "submit", "echo "+marker+" two").stdout)
	if r = cli(t, env, "wait", second); r.code != 0 {
		t.Fatalf("wait second: %v", r)
	}
	r = cli(t, env, "ls", "--cmd", strings.ToUpper(marker), "--status", "succeeded")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], second) || !strings.HasPrefix(lines[2], id) {
		t.Fatalf("ls --cmd: want a header and the two tasks, newest first: %v", r)
	}
	r = cli(t, env, "ls", "--cmd", marker, "--limit", "1")
	if lines = strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 2 || !strings.Contains(r.stderr, "more tasks: add --cursor ") {
		t.Fatalf("ls --limit 1: want one row and the cursor on stderr: %v", r)
	}
	cursor := strings.Fields(strings.TrimPrefix(r.stderr, "more tasks: add --cursor "))[0]
	r = cli(t, env, "ls", "--cmd", marker, "--limit", "1", "--cursor", cursor, "--json")
	var page struct {
		Tasks      []client.Task `json:"tasks"`
		NextCursor *string       `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); r.code != 0 || err != nil || len(page.Tasks) != 1 || page.Tasks[0].ID != id || page.NextCursor != nil {
		t.Fatalf("ls --cursor --json: want the first task and no next page: %v (%v)", r, err)
	}
	r = cli(t, env, "ls", "--cmd", marker, "--limit", "1", "--all", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &page); r.code != 0 || err != nil || len(page.Tasks) != 2 || r.stderr != "" {
		t.Fatalf("ls --all: want both tasks: %v (%v)", r, err)
	}
	r = cli(t, env, "ls", "--worker", "no-such-worker", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &page); r.code != 0 || err != nil || page.Tasks == nil || len(page.Tasks) != 0 {
		t.Fatalf("ls of nothing: want an empty list: %v (%v)", r, err)
	}

	// retry a final task; a task that is not final cannot be.
	r = cli(t, env, "retry", id)
	if r.code != 0 || !strings.Contains(r.stdout, "task "+id+" queued again") {
		t.Fatalf("retry: %v", r)
	}
	if r = cli(t, env, "wait", "--json", id); r.code != 0 || json.Unmarshal([]byte(r.stdout), &tk) != nil || tk.Attempts != 2 {
		t.Fatalf("wait after retry: %v", r)
	}

	// A scheduled task with every submit flag: cancel it, once.
	every := []string{"submit", "--timeout", "5s", "--max-attempts", "2", "--priority", "1", "--requires", "gpu=nvidia",
		"--requires", "zone=b", "--delay", "1h", "--retry-on", "failed,timed_out", "--backoff", "1s", "--max-backoff", "4s",
		"--idempotency-key", marker, "--", "sleep", "1"}
	r = cli(t, env, append([]string{"--json"}, every...)...)
	if err := json.Unmarshal([]byte(r.stdout), &tk); r.code != 0 || err != nil || tk.Status != "scheduled" || tk.Timeout != "5s" ||
		tk.MaxAttempts != 2 || tk.Priority != 1 || tk.Requires["gpu"] != "nvidia" || tk.Requires["zone"] != "b" ||
		strings.Join(tk.RetryOn, ",") != "failed,timed_out" || tk.Backoff != "1s" || tk.MaxBackoff != "4s" || tk.RunAt == nil ||
		tk.IdempotencyKey == nil || *tk.IdempotencyKey != marker || tk.Cmd != "sleep 1" {
		t.Fatalf("submit with every flag: %v (%v)", r, err)
	}
	r = cli(t, env, every...)
	if r.code != 0 || strings.TrimSpace(r.stdout) != tk.ID || !strings.Contains(r.stderr, "idempotency key was used before") {
		t.Fatalf("submit with the same key: want the same task: %v", r)
	}
	// The same key for another request (the defaults but the command):
	// refused, naming what differs.
	r = cli(t, env, "submit", "--idempotency-key", marker, "--", "sleep", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "409") || !strings.Contains(r.stderr, "fields that differ: timeout, max_attempts, priority") {
		t.Fatalf("submit with the same key, another request: want a 409 naming the fields: %v", r)
	}
	if r = cli(t, env, "retry", tk.ID); r.code != 1 || !strings.Contains(r.stderr, "is scheduled: only a final task can be retried") {
		t.Fatalf("retry of a scheduled task: %v", r)
	}
	if r = cli(t, env, "cancel", tk.ID); r.code != 0 || r.stdout != "task "+tk.ID+" canceled\n" {
		t.Fatalf("cancel: %v", r)
	}
	if r = cli(t, env, "cancel", tk.ID); r.code != 1 || !strings.Contains(r.stderr, "already canceled: nothing to cancel") {
		t.Fatalf("cancel twice: %v", r)
	}
	if r = cli(t, env, "wait", tk.ID); r.code != exitCanceled {
		t.Fatalf("wait of a canceled task: want exit %d: %v", exitCanceled, r)
	}

	// workers, in rotation order.
	r = cli(t, env, "workers")
	if r.code != 0 || !regexp.MustCompile(`(?s)^ID\s+STATE.*\nw1\s+active.*\nw2\s+active.*2 workers connected\n$`).MatchString(r.stdout) {
		t.Fatalf("workers: %v", r)
	}
	var ws client.Workers
	if r = cli(t, env, "workers", "--json"); json.Unmarshal([]byte(r.stdout), &ws) != nil || strings.Join(ws.IDs(), ",") != "w1,w2" {
		t.Fatalf("workers --json: %v", r)
	}
}

// TestEventsFollowsTheStream follows GET /events as a person and as a
// script while a task runs, and stops at Ctrl-C (here: the context).
func TestEventsFollowsTheStream(t *testing.T) {
	cl := startCluster(t, 1)
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			args := []string{"events"}
			if asJSON {
				args = append(args, "--json")
			}
			var out, errb localcluster.Buffer
			done := make(chan int, 1)
			go func() { done <- run(ctx, args, strings.NewReader(""), &out, &errb, cl.env()) }()
			defer func() { cancel(); <-done }()
			// Tasks are submitted until the stream shows one finish: the
			// stream may not be open yet when the first one does.
			var ids []string
			var line string
			waitFor(t, 30*time.Second, "a task.finished event", func() bool {
				for _, l := range strings.Split(out.String(), "\n") {
					for _, id := range ids {
						if strings.Contains(l, "task.finished") && strings.Contains(l, id) {
							line = l
							return true
						}
					}
				}
				if tk, _, err := cl.c.SubmitWith(ctx, client.Submit{Cmd: "true", Wait: 5 * time.Second}); err == nil {
					ids = append(ids, tk.ID)
				}
				return false
			})
			cancel()
			if code := <-done; code != exitInterrupted {
				t.Fatalf("events ended with %d, want %d; stderr: %s", code, exitInterrupted, errb.String())
			}
			done <- exitInterrupted // for the deferred wait
			if asJSON {
				var e client.Event
				if err := json.Unmarshal([]byte(line), &e); err != nil || e.Type != "task.finished" || e.Status != "succeeded" || e.Seq == 0 || e.WorkerID != "w1" {
					t.Fatalf("events --json line %q: %+v %v", line, e, err)
				}
			} else if !regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} task\.finished +task=[0-9a-f-]{36} worker=w1 attempt=1 status=succeeded exit=0`).MatchString(line) {
				t.Fatalf("events line: %q", line)
			}
		})
	}
}

// TestEventsSinceReplaysWhatTheMasterKept: --since 0 prints the events the
// master kept from before the command started (after a gap line, since
// the first of them are gone), then goes on following.
func TestEventsSinceReplaysWhatTheMasterKept(t *testing.T) {
	cl := startCluster(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tk, _, err := cl.c.SubmitWith(ctx, client.Submit{Cmd: "true", Wait: 10 * time.Second})
	if err != nil || tk.Status != "succeeded" {
		t.Fatalf("submit: %+v, %v", tk, err)
	}
	var out, errb localcluster.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "--json", "--since", "0"}, strings.NewReader(""), &out, &errb, cl.env())
	}()
	var types []string
	waitFor(t, 30*time.Second, "the finished task's events from before the command", func() bool {
		types = types[:0]
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var e client.Event
			if json.Unmarshal([]byte(line), &e) == nil && (e.TaskID == tk.ID || e.Type == "gap") {
				types = append(types, e.Type)
			}
		}
		return len(types) >= 4
	})
	cancel()
	if code := <-done; code != exitInterrupted {
		t.Fatalf("events ended with %d, want %d; stderr: %s", code, exitInterrupted, errb.String())
	}
	if want := []string{"gap", "task.queued", "task.assigned", "task.finished"}; !slices.Equal(types, want) {
		t.Fatalf("events --since 0: %v, want %v", types, want)
	}
}
