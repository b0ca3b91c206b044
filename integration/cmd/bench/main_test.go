package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the minimal and durable handlers, as
// the bench binary does when it re-executes itself.
func TestMain(m *testing.M) {
	playRole()
	os.Exit(m.Run())
}

// TestBenchTinyRun runs the whole tool in a tiny mode against real local
// processes, so that `make test` keeps it working: every figure must come
// out, and the JSON must say so. The figures themselves are not judged
// here; speed targets belong to `make bench`.
func TestBenchTinyRun(t *testing.T) {
	o := defaults()
	o.runs, o.dur, o.conc, o.tasks, o.idleTasks, o.rssSteps, o.workers = 1, 100*time.Millisecond, []int{1, 4}, 20, 3, []int{200}, 2
	o.assignSteps = 10
	o.out = filepath.Join(t.TempDir(), "results", "latest.json")
	var logged bytes.Buffer
	o.log = io.MultiWriter(testWriter{t}, &logged)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	// The fork/exec baseline is the denominator of completed_vs_forkexec:
	// it is measured right before the throughput run, not a phase earlier.
	lines := strings.Split(logged.String(), "\n")
	fe := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "sh -c true at concurrency 2") })
	if fe < 0 || fe+1 >= len(lines) || !strings.Contains(lines[fe+1], "x true on 2 workers") {
		t.Errorf("the fork/exec line is not followed by the throughput run's; the log:\n%s", logged.String())
	}
	if err := writeJSON(o.out, rep); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"forkexec_rate_c2", "minimal_rate_c1", "submit_rate_c4", "submit_p99_ms_c4", "durable_rate_c4", "durable_row_rate_c4",
		"forkexec_cpu_ms_per_run_c2", "forkexec_bare_cpu_ms_per_run_c2", "completed_rate", "floor_completed_rate", "floor_osexec_completed_rate", "submit_rate_c64_workers", "floor_accepted_rate_c64_workers", "queued_to_started_p99_ms", "submitted_to_finished_p50_ms",
		"idle_queued_to_started_p50_ms", "dead_worker_rerun_s", "master_rss_mib_200",
		"assign_step_us_queued_1k", "assign_step_us_queued_1m",
	} {
		m, ok := rep.metric(name)
		if !ok {
			t.Errorf("no metric %s", name)
			continue
		}
		if len(m.Runs) != 1 || !(m.Median > 0) {
			t.Errorf("%s = %+v, want one positive run", name, m.Stat)
		}
	}

	data, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("results are not JSON: %v\n%s", err, data)
	}
	if back.Machine.Cores < 1 || back.Machine.Runs != 1 || len(back.Metrics) != len(rep.Metrics) || len(back.Targets) != len(targets) {
		t.Errorf("results JSON: %+v", back)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func TestUnknownPhaseFailsBeforeBuilding(t *testing.T) {
	o := defaults()
	o.phases = []string{"submit", "warp"}
	_, err := run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), `"warp"`) {
		t.Fatalf("run with phase warp: err = %v, want one naming it", err)
	}
}
