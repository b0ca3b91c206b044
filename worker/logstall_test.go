package main

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/logbuf"
)

// stalledOutput is a log output nobody reads, as a paused terminal or a
// log driver behind on its disk: its writes wait until it is released.
type stalledOutput struct {
	released chan struct{}
	syncLog
}

func (s *stalledOutput) Write(p []byte) (int, error) {
	<-s.released
	return s.syncLog.Write(p)
}

// A worker whose log output has stopped being read goes on: the logger
// main gives it never waits for the output, so a task that logs does not
// hold its result. Here the worker starts, drains and stops with its
// output stalled throughout; its lines come out once the output moves.
func TestStalledLogOutputStopsNothing(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"WORKER_ID": "w1", "WORKER_MASTER_ADDR": "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	out := &stalledOutput{released: make(chan struct{})}
	log, buf := logbuf.NewLogger(out, "debug", "text")
	// Two signals already waiting: run starts, drains at once and stops.
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	done := make(chan error, 1)
	go func() { done <- run(sigs, cfg, log) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(out.released)
		t.Fatal("the worker did not stop within 10s while its log output was stalled")
	}
	if got := out.String(); got != "" {
		t.Fatalf("written through a stalled output: %q", got)
	}
	close(out.released)
	buf.Close()
	if got := out.String(); !strings.Contains(got, "worker starting") {
		t.Fatalf("the lines did not come out once the output moved:\n%s", got)
	}
}
