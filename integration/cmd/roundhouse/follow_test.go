package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
)

// TestRunExitsWithTheTasksCode: run prints the task's stdout and stderr
// where they belong and exits as the task did.
func TestRunExitsWithTheTasksCode(t *testing.T) {
	cl := startCluster(t, 2)
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		inStderr string
	}{
		{"succeeded", []string{"run", "--", "echo", "hello"}, 0, "hello\n", ""},
		{"its exit code", []string{"run", "--", "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
		{"timed out", []string{"run", "--timeout", "1s", "--", "echo started; sleep 30"}, exitTimedOut, "started\n", "roundhouse: task timed_out"},
		{"killed, no exit code", []string{"run", "--", "kill -9 $$"}, exitNoCode, "", "roundhouse: task failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, cl.env(), tt.args...)
			if r.code != tt.code || r.stdout != tt.stdout || !strings.Contains(r.stderr, tt.inStderr) {
				t.Fatalf("want exit %d, stdout %q, %q in stderr; got %v", tt.code, tt.stdout, tt.inStderr, r)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		r := cli(t, cl.env(), "run", "--json", "--", "echo", "hi")
		var kinds []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var e struct {
				Event string `json:"event"`
				client.OutputEvent
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			kinds = append(kinds, e.Event)
			if e.Event == "output" && (e.Text != "hi\n" || e.Stream != "stdout") || e.Event == "end" && e.Status != "succeeded" {
				t.Fatalf("event %q in %v", line, r)
			}
		}
		if r.code != 0 || strings.Join(kinds, ",") != "attempt,output,end" {
			t.Fatalf("run --json: want the events attempt, output, end: %v", r)
		}
	})
}

// TestRunCtrlC runs the built binary and presses Ctrl-C (SIGINT) while a
// task runs: at a terminal, run asks whether to cancel the task; without
// one, it says how to and leaves the task running.
func TestRunCtrlC(t *testing.T) {
	cl := startCluster(t, 1)
	tests := []struct {
		name   string
		tty    string
		steps  []step
		code   int
		status string // the task's afterwards
		stderr string
	}{
		{"y cancels", "1", []step{{"^C", "PROMPT", 1}, {"y\n", "", 0}}, exitCanceled, "canceled", "roundhouse: task canceled"},
		{"n, then Ctrl-C twice", "1", []step{{"^C", "PROMPT", 1}, {"n\n", "keeps running (Ctrl-C again", 1}, {"^C", "PROMPT", 2}, {"^C", "", 0}},
			exitInterrupted, "running", "keeps running on the master; cancel it with: roundhouse cancel "},
		{"no terminal", "0", []step{{"^C", "", 0}}, exitInterrupted, "running", "keeps running on the master; cancel it with: roundhouse cancel "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bins.roundhouse, "run", "-v", "--", "echo first; sleep 60")
			cmd.Env = append(append(os.Environ(), cl.env()...), "ROUNDHOUSE_TTY="+tt.tty)
			out, errb, stdin, exited := startProcess(t, cmd)

			// running fails the test at once if run has ended already.
			running := func() bool {
				select {
				case <-exited:
					t.Fatalf("run ended early with %d\nstdout:\n%s\nstderr:\n%s", cmd.ProcessState.ExitCode(), out.String(), errb.String())
				default:
				}
				return true
			}
			// The first line arrives while the task runs: followed live.
			waitFor(t, 30*time.Second, "the first line", func() bool { return running() && out.String() == "first\n" })
			m := regexp.MustCompile(`roundhouse: task ([0-9a-f-]{36}) `).FindStringSubmatch(errb.String())
			if m == nil {
				t.Fatalf("no task ID on stderr: %q", errb.String())
			}
			id := m[1]
			if tk, err := cl.c.Get(context.Background(), id); err != nil || tk.Status != "running" {
				t.Fatalf("task %s while its first line was shown: %+v, %v", id, tk, err)
			}
			prompt := "cancel task " + id + " on the master? [y/N] "
			for _, st := range tt.steps {
				if st.do == "^C" {
					if err := cmd.Process.Signal(os.Interrupt); err != nil {
						t.Fatal(err)
					}
				} else if _, err := io.WriteString(stdin, st.do); err != nil {
					t.Fatal(err)
				}
				if st.want == "" {
					continue
				}
				want := strings.ReplaceAll(st.want, "PROMPT", prompt)
				waitFor(t, 10*time.Second, want, func() bool { return running() && strings.Count(errb.String(), want) >= st.count })
			}
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("run did not end; stderr:\n%s", errb.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != tt.code || !strings.Contains(errb.String(), tt.stderr) {
				t.Fatalf("exit %d, want %d and %q in stderr:\n%s", code, tt.code, tt.stderr, errb.String())
			}
			tk, err := cl.c.Get(context.Background(), id)
			if err != nil || tk.Status != tt.status {
				t.Fatalf("task afterwards: %+v, %v; want %s", tk, err, tt.status)
			}
			if tt.status == "running" {
				if r := cli(t, cl.env(), "cancel", id); r.code != 0 {
					t.Fatalf("cancel: %v", r)
				}
			}
		})
	}
}

// step is one thing the user does to a running `run`: do is "^C" (SIGINT)
// or a line to type, after which count copies of want (PROMPT: the
// prompt) are on stderr; no want: run is expected to end.
type step struct {
	do, want string
	count    int
}

// TestRunAfterALostWorker kills the worker running a followed task: the
// master runs it again on the other worker, and run says so on stderr and
// ends with the second attempt's output and exit code.
func TestRunAfterALostWorker(t *testing.T) {
	cl := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The task waits at a gate until the test has killed its worker: with
	// a fixed run time instead (sleep 2), a loaded machine that took longer
	// than that from the first line to the kill let attempt 1 succeed, and
	// the test failed for want of attempt 2. The gate stays open for
	// attempt 2. Its wait is bounded so that attempt 1's shell, which the
	// kill leaves behind, ends within a minute should the test fail first.
	gate := filepath.Join(t.TempDir(), "gate")
	cmd := "echo start; n=0; until [ -e '" + gate + "' ] || [ $n -ge 1200 ]; do n=$((n+1)); sleep 0.05; done; echo done"
	var out, errb localcluster.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "-v", "--", cmd}, strings.NewReader(""), &out, &errb, cl.env())
	}()
	defer func() { cancel(); <-done }()
	waitFor(t, 30*time.Second, "the first line", func() bool {
		select {
		case code := <-done:
			done <- code // for the deferred wait
			t.Fatalf("run ended early with %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		default:
		}
		return strings.Contains(out.String(), "start\n")
	})
	m := regexp.MustCompile(`roundhouse: task ([0-9a-f-]{36}) `).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("no task ID on stderr: %q", errb.String())
	}
	tk, err := cl.c.Get(ctx, m[1])
	if err != nil || tk.Worker() == "" {
		t.Fatalf("task: %+v, %v", tk, err)
	}
	lost := tk.Worker()
	if err := cl.Worker(lost).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var code int
	select {
	case code = <-done:
		done <- code // for the deferred wait
	case <-ctx.Done():
		t.Fatalf("run did not end; stderr:\n%s", errb.String())
	}
	note := regexp.MustCompile(`roundhouse: attempt 2 on (w\d) \(attempt 1 lost`).FindStringSubmatch(errb.String())
	if code != 0 || note == nil || note[1] == lost || !strings.HasSuffix(out.String(), "start\ndone\n") {
		t.Fatalf("want exit 0, a note of attempt 2 on the other worker, the second attempt's output; got exit %d\nstdout:\n%s\nstderr:\n%s",
			code, out.String(), errb.String())
	}
}

// startProcess starts cmd with its output in buffers and a pipe to its
// stdin; exited is closed once it has been waited for. The test's cleanup
// kills it if it still runs, and waits.
func startProcess(t *testing.T, cmd *exec.Cmd) (out, errb *localcluster.Buffer, stdin io.WriteCloser, exited <-chan struct{}) {
	t.Helper()
	out, errb = new(localcluster.Buffer), new(localcluster.Buffer)
	cmd.Stdout, cmd.Stderr = out, errb
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // owned by the cleanup below, which waits for it
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return out, errb, stdin, done
}
