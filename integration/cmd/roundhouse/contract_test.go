package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunAgainstTheContract runs `run` against a fake master that speaks
// the README's Live output section and breaks the stream once: run reconnects, does
// not print again what it printed, tells of the lost attempt and the new
// one, and exits with the task's code.
func TestRunAgainstTheContract(t *testing.T) {
	var follows atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.Method == http.MethodGet && r.URL.Path == "/tasks/t1/output" && r.URL.Query().Get("follow") == "true":
			w.Header().Set("Content-Type", "text/event-stream")
			send := func(name, data string) { fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data) }
			send("attempt", `{"attempt":1,"worker_id":"w1"}`)
			send("output", `{"attempt":1,"stream":"stdout","offset":0,"text":"start\n"}`)
			if follows.Add(1) == 1 {
				return // the master goes away mid-task
			}
			send("output", `{"attempt":1,"stream":"stdout","offset":6,"text":"half"}`)
			send("attempt_end", `{"attempt":1,"worker_id":"w1","outcome":"lost","detail":"worker w1 timed out"}`)
			send("attempt", `{"attempt":2,"worker_id":"w2"}`)
			send("output", `{"attempt":2,"stream":"stdout","offset":0,"text":"start\n"}`)
			send("skipped", `{"attempt":2,"stream":"stderr","bytes":7}`)
			send("output", `{"attempt":2,"stream":"stderr","offset":7,"text":"oops\n"}`)
			send("end", `{"status":"failed","exit_code":4,"error":null,"attempt":2,"stdout_truncated":false,"stderr_truncated":false}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":"no such endpoint: %s %s"}`, r.Method, r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	r := cli(t, []string{"ROUNDHOUSE_API=" + srv.URL, "MASTER_API_TOKEN="}, "run", "--", "x")
	if r.code != 4 || r.stdout != "start\nhalfstart\n" {
		t.Fatalf("want exit 4 and each byte once per attempt: %v", r)
	}
	for _, want := range []string{
		"roundhouse: lost the output stream of task t1 (the master at " + srv.URL + " closed the stream: did it stop?); reconnecting\n",
		"roundhouse: attempt 2 on w2 (attempt 1 lost: worker w1 timed out)\n",
		"roundhouse: [7 bytes of stderr skipped",
		"oops\n",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if strings.Contains(r.stderr, "roundhouse: task failed") {
		t.Errorf("a failure with an exit code needs no note: the code says it\n%s", r.stderr)
	}
	if t.Failed() {
		t.Log(r)
	}
}

// TestCtrlCAgainstTheContract presses Ctrl-C in the built binary following
// a fake master's task, answers y, and sees the cancel reach the master
// and run exit as the canceled task did.
func TestCtrlCAgainstTheContract(t *testing.T) {
	buildBins(t)
	canceled := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.Method == http.MethodDelete && r.URL.Path == "/tasks/t1":
			once.Do(func() { close(canceled) })
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"canceled"}`)
		case r.URL.Path == "/tasks/t1/output":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n")
			fmt.Fprint(w, "event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"first\\n\"}\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-canceled:
				fmt.Fprint(w, "event: end\ndata: {\"status\":\"canceled\",\"exit_code\":null,\"error\":null,\"attempt\":1}\n\n")
			case <-r.Context().Done():
			}
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	cmd := exec.Command(bins.roundhouse, "--api", srv.URL, "run", "--", "x")
	cmd.Env = append(os.Environ(), "ROUNDHOUSE_TTY=1", "MASTER_API_TOKEN=")
	out, errb, stdin, exited := startProcess(t, cmd)
	waitFor(t, 10*time.Second, "the first line", func() bool { return out.String() == "first\n" })
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the prompt", func() bool { return strings.Contains(errb.String(), "cancel task t1 on the master? [y/N] ") })
	io.WriteString(stdin, "y\n")
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not end:\n%s", errb.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != exitCanceled || !strings.Contains(errb.String(), "roundhouse: task t1 canceled\n") {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitCanceled, errb.String())
	}
}
