package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted on purpose
	}
	tests := []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"one value", []float64{7}, 99, 7},
		{"p50 of 1..100", hundred, 50, 50},
		{"p99 of 1..100", hundred, 99, 99},
		{"p100 is the max", hundred, 100, 100},
		{"p1 is the min", hundred, 1, 1},
		{"p50 of four rounds up the rank", []float64{4, 1, 3, 2}, 50, 2},
		{"p99 of four is the max", []float64{4, 1, 3, 2}, 99, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.xs, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.xs, tt.p, got, tt.want)
			}
		})
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("percentile of nothing = %v, want NaN", got)
	}
	xs := []float64{3, 1, 2}
	percentile(xs, 50)
	if xs[0] != 3 {
		t.Errorf("percentile sorted its argument: %v", xs)
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		runs []float64
		want Stat
	}{
		{"three runs: the middle one", []float64{30, 10, 20}, Stat{Median: 20, Min: 10, Max: 30, Runs: []float64{30, 10, 20}}},
		{"one run", []float64{5}, Stat{Median: 5, Min: 5, Max: 5, Runs: []float64{5}}},
		{"two runs: their mean", []float64{1, 4}, Stat{Median: 2.5, Min: 1, Max: 4, Runs: []float64{1, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarize(tt.runs)
			if got.Median != tt.want.Median || got.Min != tt.want.Min || got.Max != tt.want.Max || !equal(got.Runs, tt.want.Runs) {
				t.Errorf("summarize(%v) = %+v, want %+v", tt.runs, got, tt.want)
			}
		})
	}
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMs(t *testing.T) {
	got := ms([]time.Duration{1500 * time.Microsecond, 2 * time.Second})
	if !equal(got, []float64{1.5, 2000}) {
		t.Errorf("ms = %v, want [1.5 2000]", got)
	}
}

// TestEvaluate checks that ratios are taken run by run and that each target
// passes, fails or is left unmeasured as it should.
func TestEvaluate(t *testing.T) {
	r := &Report{}
	r.add("submit_rate_c64", "req/s", []float64{600, 300, 900}, "")
	r.add("minimal_rate_c64", "req/s", []float64{1000, 1000, 1000}, "")
	r.add("completed_rate", "tasks/s", []float64{80, 90, 100}, "")
	r.add("forkexec_rate_c2", "runs/s", []float64{100, 100, 100}, "")
	r.add("submit_p99_ms_c16", "ms", []float64{4, 6, 7}, "")
	r.add("idle_queued_to_started_p50_ms", "ms", []float64{1, 1.5, 3}, "")
	r.add("dead_worker_rerun_s", "s", []float64{10, 10, 10}, "")
	r.add("assign_step_us_queued_1k", "us", []float64{10, 20, 10}, "")
	r.add("assign_step_us_queued_1m", "us", []float64{11, 10, 30}, "")
	r.add("submit_rate_c64_workers", "req/s", []float64{100, 200, 300}, "")
	r.add("peer_accepted_rate_c64_workers", "req/s", []float64{100, 200, 300}, "")
	r.add("peer_completed_rate", "tasks/s", []float64{100, 100, 100}, "")
	r.add("cpu_master_ms_per_task", "ms", []float64{0.1, 0.05, 0.3}, "")
	r.add("cpu_workers_ms_per_task", "ms", []float64{0.2, 0.1, 0.3}, "")
	r.add("nothing", "s", nil, "") // no runs: no metric
	r.evaluate()

	if _, ok := r.metric("nothing"); ok {
		t.Error("a metric without runs was added")
	}
	wantRatios := map[string]Stat{
		"accepted_vs_minimal_c64":         {Median: 0.6, Min: 0.3, Max: 0.9},
		"completed_vs_forkexec":           {Median: 0.9, Min: 0.8, Max: 1},
		"assign_step_1m_vs_1k":            {Median: 1.1, Min: 0.5, Max: 3}, // run by run: 1.1, 0.5, 3
		"accepted_workers_vs_minimal_c64": {Median: 0.2, Min: 0.1, Max: 0.3},
		"accepted_vs_peer_c64":            {Median: 1, Min: 1, Max: 1},
		"completed_vs_peer":               {Median: 0.9, Min: 0.8, Max: 1},
	}
	if len(r.Ratios) != len(wantRatios) {
		t.Fatalf("ratios = %+v, want %d", r.Ratios, len(wantRatios))
	}
	for _, x := range r.Ratios {
		w := wantRatios[x.Name]
		if !near(x.Median, w.Median) || !near(x.Min, w.Min) || !near(x.Max, w.Max) {
			t.Errorf("ratio %s = %+v, want %+v", x.Name, x.Stat, w)
		}
	}
	want := map[string]string{
		"accepted/s at 64 >= 60% of the minimal handler":    "pass", // 0.6 >= 0.6: the limit itself passes
		"submit p99 at 16 < 5 ms":                           "fail", // median 6 ms
		"completed/s (true, 5 workers) >= 85% of fork/exec": "pass",
		"queued-to-started p50, idle < 2 ms":                "pass", // median 1.5 ms
		"master RSS with 1M queued < 512 MiB":               "n/a",  // not measured
		"dead worker to re-run < 10 s":                      "fail", // 10 is not under 10
		"accepted/s at 64, 5 workers >= the old system":     "pass", // 1.0 run by run
		"completed/s (true, 5 workers) >= the old system":   "fail", // 0.9 run by run
		"CPU per task, master <= 0.1 ms":                    "pass", // 0.1 <= 0.1: the limit itself passes
		"CPU per task, worker <= 0.1 ms (command excluded)": "fail", // median 0.2
		"master RSS with 1M queued < 256 MiB":               "n/a",
	}
	if len(r.Targets) != len(want) {
		t.Fatalf("got %d targets, want %d", len(r.Targets), len(want))
	}
	for _, tg := range r.Targets {
		got := "n/a"
		if tg.Pass != nil {
			got = map[bool]string{true: "pass", false: "fail"}[*tg.Pass]
		}
		if got != want[tg.Name] {
			t.Errorf("target %q: %s, want %s", tg.Name, got, want[tg.Name])
		}
	}
}

// TestTargetBounds checks that a failed target says whether its bound,
// the same figure for the least that keeps the promise in the same run,
// met it: out of reach when not, within reach when it did.
func TestTargetBounds(t *testing.T) {
	r := &Report{}
	r.add("completed_rate", "tasks/s", []float64{80, 90, 100}, "")
	r.add("peer_completed_rate", "tasks/s", []float64{100, 100, 100}, "")
	r.add("floor_completed_rate", "tasks/s", []float64{100, 110, 120}, "") // 1.1 of the old system
	r.add("cpu_workers_ms_per_task", "ms", []float64{0.2, 0.1, 0.3}, "")
	r.add("forkexec_bare_cpu_ms_per_run_c2", "ms", []float64{0.05, 0.12, 0.11}, "") // median 0.11
	r.add("cpu_master_ms_per_task", "ms", []float64{0.1, 0.05, 0.3}, "")
	r.add("cpu_floor_master_ms_per_task", "ms", []float64{0.2, 0.3, 0.25}, "")
	r.add("submit_p99_ms_c16", "ms", []float64{5.3, 5.0, 4.9}, "")      // median 5.0: not under 5
	r.add("durable_row_p99_ms_c16", "ms", []float64{4.2, 3.9, 5.1}, "") // median 4.2
	r.add("submit_rate_c64_workers", "req/s", []float64{90, 95, 100}, "")
	r.add("peer_accepted_rate_c64_workers", "req/s", []float64{100, 100, 100}, "")
	r.add("floor_accepted_rate_c64_workers", "req/s", []float64{99, 98, 95}, "") // 0.98 of the old system
	r.evaluate()

	type verdict struct {
		pass, boundPass *bool
		note            string
	}
	got := map[string]verdict{}
	for _, tg := range r.Targets {
		got[tg.Metric] = verdict{tg.Pass, tg.BoundPass, tg.boundNote()}
	}
	yes, no := true, false
	for metric, want := range map[string]verdict{
		"completed_vs_peer":       {&no, &yes, "   (bound floor_completed_vs_peer 1.10: within reach)"},
		"cpu_workers_ms_per_task": {&no, &no, "   (bound forkexec_bare_cpu_ms_per_run_c2 0.11: out of reach in this run)"},
		// Met: its bound is judged (and fails) but says nothing.
		"cpu_master_ms_per_task": {&yes, &no, ""},
		// Not measured, nor its bound.
		"accepted_vs_minimal_c64": {nil, nil, ""},
		// A latency's bound, below the limit.
		"submit_p99_ms_c16": {&no, &yes, "   (bound durable_row_p99_ms_c16 4.20: within reach)"},
		// The floor master beside its workers, under the old system too.
		"accepted_vs_peer_c64": {&no, &no, "   (bound floor_accepted_vs_peer_c64 0.98: out of reach in this run)"},
		// No bound.
		"idle_queued_to_started_p50_ms": {nil, nil, ""},
	} {
		g := got[metric]
		if !sameBool(g.pass, want.pass) || !sameBool(g.boundPass, want.boundPass) || g.note != want.note {
			t.Errorf("%s: pass %v, bound pass %v, note %q; want %v, %v, %q",
				metric, show(g.pass), show(g.boundPass), g.note, show(want.pass), show(want.boundPass), want.note)
		}
	}

	var table bytes.Buffer
	r.writeTable(&table)
	if !strings.Contains(table.String(), "0.11: out of reach in this run)") {
		t.Errorf("table does not say the worker's CPU was out of reach:\n%s", table.String())
	}
}

func sameBool(a, b *bool) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func show(b *bool) string {
	if b == nil {
		return "n/a"
	}
	return fmt.Sprint(*b)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestRatioNeedsMatchingRuns(t *testing.T) {
	r := &Report{}
	r.add("submit_rate_c64", "req/s", []float64{1, 2}, "")
	r.add("minimal_rate_c64", "req/s", []float64{1, 2, 3}, "")
	r.add("completed_rate", "tasks/s", []float64{1}, "")
	r.add("forkexec_rate_c2", "runs/s", []float64{0}, "")
	r.evaluate()
	if len(r.Ratios) != 0 {
		t.Errorf("ratios from mismatched or zero runs: %+v", r.Ratios)
	}
}

// TestReportJSON checks the shape of bench/results/latest.json: what
// readers (the README, the lead's scripts) rely on.
func TestReportJSON(t *testing.T) {
	r := &Report{Machine: Machine{Cores: 2, GoVersion: "go1.26", Commit: "abc", Mode: "processes", Runs: 3}}
	r.add("submit_rate_c64", "req/s", []float64{1, 2, 3}, "a note")
	r.evaluate()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Machine map[string]any   `json:"machine"`
		Metrics []map[string]any `json:"metrics"`
		Targets []map[string]any `json:"targets"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cores", "go_version", "date", "commit", "mode", "runs"} {
		if _, ok := got.Machine[k]; !ok {
			t.Errorf("machine has no %q: %s", k, data)
		}
	}
	m := got.Metrics[0]
	if m["name"] != "submit_rate_c64" || m["median"] != 2.0 || m["min"] != 1.0 || m["max"] != 3.0 || m["note"] != "a note" {
		t.Errorf("metric = %v", m)
	}
	for _, tg := range got.Targets {
		if tg["pass"] != nil || tg["value"] != nil {
			t.Errorf("an unmeasured target has a value or verdict: %v", tg)
		}
	}

	var table bytes.Buffer
	r.writeTable(&table)
	for _, s := range []string{"submit_rate_c64", "n/a", "2 cores"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, table.String())
		}
	}
}

func TestCountName(t *testing.T) {
	tests := []struct {
		n    int
		want string
	}{{100_000, "100k"}, {1_000_000, "1m"}, {1000, "1k"}, {1500, "1500"}, {2_500_000, "2500k"}}
	for _, tt := range tests {
		if got := countName(tt.n); got != tt.want {
			t.Errorf("countName(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestNum(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{{12345.6, "12346"}, {12.34, "12.3"}, {1.234, "1.23"}, {0.0015, "0.002"}, {0.25, "0.25"}, {math.NaN(), "-"}}
	for _, tt := range tests {
		if got := num(tt.v); got != tt.want {
			t.Errorf("num(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestReadCPU(t *testing.T) {
	// Burn some CPU so the counters have something to show.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	c, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if c.self <= 0 || c.self > time.Hour || c.children < 0 {
		t.Errorf("readCPU(self) = %+v", c)
	}
	if _, err := readCPU(-1); err == nil {
		t.Error("readCPU of no process: want an error")
	}
}
