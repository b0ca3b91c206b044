package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunStoppedBySignalNamesTheTask runs the built binary following a
// fake master's task and stops it with a signal (a kill, a CI job's
// timeout) once the task was submitted. The task runs on: run's last
// words must say which task it is and how to go on with it, and its exit
// code is 128 + the signal's number, as a shell's would be. SIGTERM ended
// run with 130 and not a word.
func TestRunStoppedBySignalNamesTheTask(t *testing.T) {
	buildBins(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/tasks":
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"id":"t1","cmd":"x","status":"queued"}`)
		case r.URL.Path == "/tasks/t1/output":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: attempt\ndata: {\"attempt\":1,\"worker_id\":\"w1\"}\n\n")
			fmt.Fprint(w, "event: output\ndata: {\"attempt\":1,\"stream\":\"stdout\",\"offset\":0,\"text\":\"first\\n\"}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done() // the task runs on
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name string
		sig  os.Signal
		code int
		last []string // what run's last line says
	}{
		{"SIGTERM", syscall.SIGTERM, exitTerminated, []string{"task t1 may still run", "roundhouse wait t1"}},
		{"SIGINT without a terminal", os.Interrupt, exitInterrupted, []string{"task t1 keeps running", "roundhouse cancel t1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bins.roundhouse, "--api", srv.URL, "run", "--", "x")
			cmd.Env = append(os.Environ(), "ROUNDHOUSE_TTY=0", "MASTER_API_TOKEN=")
			out, errb, _, exited := startProcess(t, cmd)
			waitFor(t, 10*time.Second, "the first line", func() bool { return out.String() == "first\n" })
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Fatalf("run did not end:\n%s", errb.String())
			}
			stderr := errb.String()
			last := stderr[strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n")+1:]
			if code := cmd.ProcessState.ExitCode(); code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			for _, w := range tt.last {
				if !strings.Contains(last, w) {
					t.Errorf("the last line lacks %q: %q", w, last)
				}
			}
			if t.Failed() {
				t.Logf("stderr:\n%s", stderr)
			}
		})
	}
}

// TestWaitStoppedBySIGTERMExits143 stops a wait on a task that has not
// ended with SIGTERM: any command a SIGTERM stops exits 128 + 15, as a
// shell reports it, not with what its canceled request made of it (wait
// exited 130, as for Ctrl-C).
func TestWaitStoppedBySIGTERMExits143(t *testing.T) {
	buildBins(t)
	asked := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/tasks/t1" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		select {
		case asked <- struct{}{}:
		default:
		}
		<-r.Context().Done() // the task is still running
	}))
	t.Cleanup(srv.Close)
	cmd := exec.Command(bins.roundhouse, "--api", srv.URL, "wait", "t1")
	cmd.Env = append(os.Environ(), "MASTER_API_TOKEN=")
	_, errb, _, exited := startProcess(t, cmd)
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatalf("wait asked nothing:\n%s", errb.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("wait did not end:\n%s", errb.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != exitTerminated {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitTerminated, errb.String())
	}
}
