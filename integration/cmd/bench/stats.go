package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of xs by the
// nearest-rank method: the smallest value with at least p% of the sample at
// or below it. It sorts a copy; an empty sample gives NaN.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// ms converts durations to milliseconds, the unit of every latency figure.
func ms(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// Stat is one figure over the runs: the median is the headline, min and
// max show the spread, Runs keeps each run's value in order.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

// summarize takes the values of the runs. The median of an even count is
// the mean of the middle two.
func summarize(runs []float64) Stat {
	if len(runs) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(runs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1], Runs: slices.Clone(runs)}
}

// Metric is one measured figure.
type Metric struct {
	Name string `json:"name"`
	Unit string `json:"unit"`
	Stat
	Note string `json:"note,omitempty"`
}

// Ratio is a headline: one metric against another measured in the same
// run. Each run's ratio is taken on its own, then summarized, so a slow
// moment of the shared machine hits both sides of a ratio at once.
type Ratio struct {
	Name        string `json:"name"`
	Numerator   string `json:"numerator"`
	Denominator string `json:"denominator"`
	Stat
}

// Target is one goal of an issue and whether the run met it. Pass is nil
// when the metric was not measured (e.g. -no-1m, or no -peer).
type Target struct {
	Name   string   `json:"name"`
	Issue  int      `json:"issue"`  // the issue that set it
	Metric string   `json:"metric"` // a Metric or Ratio name
	Op     string   `json:"op"`     // ">=", "<" or "<="
	Limit  float64  `json:"limit"`
	Value  *float64 `json:"value"` // the median; nil when not measured
	Pass   *bool    `json:"pass"`

	// Bound names the same figure, from the same run, for the least that
	// any system doing what the target asks of Roundhouse must do (a
	// Metric or Ratio; "" for none): the row handler for submissions, the
	// floor master for tasks run, a bare fork and wait for a worker. When
	// the target fails and its bound fails it too, nothing that keeps
	// Roundhouse's promise met the target in that run, whatever its code;
	// when the bound meets it, the target was within reach.
	Bound      string   `json:"bound,omitempty"`
	BoundValue *float64 `json:"bound_value,omitempty"` // its median; nil when not measured
	BoundPass  *bool    `json:"bound_pass,omitempty"`  // whether that meets the target
}

// Machine says where the figures come from.
type Machine struct {
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Date      string `json:"date"`
	Commit    string `json:"commit"`
	Mode      string `json:"mode"` // processes or containers
	Runs      int    `json:"runs"`
}

// Report is bench/results/latest.json.
type Report struct {
	Machine  Machine  `json:"machine"`
	Metrics  []Metric `json:"metrics"`
	Ratios   []Ratio  `json:"ratios"`
	Targets  []Target `json:"targets"`
	Duration string   `json:"duration"` // how long the whole bench took
}

// metric returns the named metric.
func (r *Report) metric(name string) (Metric, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// add appends a metric from per-run values; no values adds nothing.
func (r *Report) add(name, unit string, runs []float64, note string) {
	if len(runs) == 0 {
		return
	}
	r.Metrics = append(r.Metrics, Metric{Name: name, Unit: unit, Stat: summarize(runs), Note: note})
}

// ratio adds num/den computed run by run. It needs both metrics with the
// same number of runs; otherwise it adds nothing.
func (r *Report) ratio(name, num, den string) {
	n, ok1 := r.metric(num)
	d, ok2 := r.metric(den)
	if !ok1 || !ok2 || len(n.Runs) != len(d.Runs) {
		return
	}
	runs := make([]float64, len(n.Runs))
	for i := range runs {
		if d.Runs[i] <= 0 { // JSON has no Inf; such a run measured nothing
			return
		}
		runs[i] = n.Runs[i] / d.Runs[i]
	}
	r.Ratios = append(r.Ratios, Ratio{Name: name, Numerator: num, Denominator: den, Stat: summarize(runs)})
}

// value is the median of a metric or ratio by name.
func (r *Report) value(name string) (float64, bool) {
	if m, ok := r.metric(name); ok {
		return m.Median, true
	}
	for _, x := range r.Ratios {
		if x.Name == name {
			return x.Median, true
		}
	}
	return 0, false
}

// targets are the goals of issue 6 and of issue 14, which kept issue 6's
// and added the old system (-peer) as a yardstick.
var targets = []Target{
	{Name: "accepted/s at 64 >= 60% of the minimal handler", Issue: 6, Metric: "accepted_vs_minimal_c64", Op: ">=", Limit: 0.60, Bound: "durable_row_vs_minimal_c64"},
	{Name: "submit p99 at 16 < 5 ms", Issue: 6, Metric: "submit_p99_ms_c16", Op: "<", Limit: 5, Bound: "durable_row_p99_ms_c16"},
	{Name: "completed/s (true, 5 workers) >= 85% of fork/exec", Issue: 6, Metric: "completed_vs_forkexec", Op: ">=", Limit: 0.85, Bound: "floor_completed_vs_forkexec"},
	{Name: "queued-to-started p50, idle < 2 ms", Issue: 6, Metric: "idle_queued_to_started_p50_ms", Op: "<", Limit: 2},
	{Name: "master RSS with 1M queued < 512 MiB", Issue: 6, Metric: "master_rss_mib_1m", Op: "<", Limit: 512},
	{Name: "dead worker to re-run < 10 s", Issue: 6, Metric: "dead_worker_rerun_s", Op: "<", Limit: 10},
	{Name: "accepted/s at 64, 5 workers >= the old system", Issue: 14, Metric: "accepted_vs_peer_c64", Op: ">=", Limit: 1, Bound: "floor_accepted_vs_peer_c64"},
	{Name: "completed/s (true, 5 workers) >= the old system", Issue: 14, Metric: "completed_vs_peer", Op: ">=", Limit: 1, Bound: "floor_completed_vs_peer"},
	{Name: "CPU per task, master <= 0.1 ms", Issue: 14, Metric: "cpu_master_ms_per_task", Op: "<=", Limit: 0.1, Bound: "cpu_floor_master_ms_per_task"},
	{Name: "CPU per task, worker <= 0.1 ms (command excluded)", Issue: 14, Metric: "cpu_workers_ms_per_task", Op: "<=", Limit: 0.1, Bound: "forkexec_bare_cpu_ms_per_run_c2"},
	{Name: "master RSS with 1M queued < 256 MiB", Issue: 14, Metric: "master_rss_mib_1m", Op: "<", Limit: 256},
}

// evaluate fills in the ratios and the targets from the metrics.
func (r *Report) evaluate() {
	r.Ratios = nil
	r.ratio("accepted_vs_minimal_c64", "submit_rate_c64", "minimal_rate_c64")
	r.ratio("durable_vs_minimal_c64", "durable_rate_c64", "minimal_rate_c64")
	r.ratio("accepted_vs_durable_c64", "submit_rate_c64", "durable_rate_c64")
	r.ratio("durable_row_vs_minimal_c64", "durable_row_rate_c64", "minimal_rate_c64")
	r.ratio("accepted_vs_durable_row_c64", "submit_rate_c64", "durable_row_rate_c64")
	r.ratio("completed_vs_forkexec", "completed_rate", "forkexec_rate_c2")
	r.ratio("floor_completed_vs_forkexec", "floor_completed_rate", "forkexec_rate_c2")
	r.ratio("completed_vs_floor", "completed_rate", "floor_completed_rate")
	r.ratio("floor_completed_vs_peer", "floor_completed_rate", "peer_completed_rate")
	r.ratio("floor_osexec_completed_vs_forkexec", "floor_osexec_completed_rate", "forkexec_rate_c2")
	r.ratio("floor_osexec_completed_vs_peer", "floor_osexec_completed_rate", "peer_completed_rate")
	r.ratio("assign_step_1m_vs_1k", "assign_step_us_queued_1m", "assign_step_us_queued_1k")
	r.ratio("accepted_workers_vs_minimal_c64", "submit_rate_c64_workers", "minimal_rate_c64")
	r.ratio("accepted_vs_peer_c64", "submit_rate_c64_workers", "peer_accepted_rate_c64_workers")
	r.ratio("floor_accepted_vs_peer_c64", "floor_accepted_rate_c64_workers", "peer_accepted_rate_c64_workers")
	r.ratio("completed_vs_peer", "completed_rate", "peer_completed_rate")
	r.Targets = nil
	for _, t := range targets {
		if v, ok := r.value(t.Metric); ok {
			pass := t.met(v)
			t.Value, t.Pass = &v, &pass
		}
		if v, ok := r.value(t.Bound); ok && t.Bound != "" {
			pass := t.met(v)
			t.BoundValue, t.BoundPass = &v, &pass
		}
		r.Targets = append(r.Targets, t)
	}
}

// met says whether v meets the target.
func (t Target) met(v float64) bool {
	switch t.Op {
	case ">=":
		return v >= t.Limit
	case "<=":
		return v <= t.Limit
	}
	return v < t.Limit
}

// writeTable prints the report for a human.
func (r *Report) writeTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "roundhouse bench: %d cores, %s, %s, commit %s, %s, %d run(s) per figure, took %s\n",
		r.Machine.Cores, r.Machine.GoVersion, r.Machine.Date, r.Machine.Commit, r.Machine.Mode, r.Machine.Runs, r.Duration)
	fmt.Fprintln(tw, "metric\tunit\tmedian\tmin\tmax\t")
	for _, m := range r.Metrics {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", m.Name, m.Unit, num(m.Median), num(m.Min), num(m.Max))
	}
	for _, x := range r.Ratios {
		fmt.Fprintf(tw, "%s\tratio\t%s\t%s\t%s\t\n", x.Name, num(x.Median), num(x.Min), num(x.Max))
	}
	tw.Flush()
	fmt.Fprintln(w, "targets:")
	for _, t := range r.Targets {
		verdict, v := "n/a", math.NaN()
		if t.Pass != nil {
			verdict, v = map[bool]string{true: "PASS", false: "FAIL"}[*t.Pass], *t.Value
		}
		fmt.Fprintf(w, "  %-4s #%-2d %-52s %s %s %s%s\n", verdict, t.Issue, t.Name, num(v), t.Op, num(t.Limit), t.boundNote())
	}
	fmt.Fprintln(w)
	r.writeComparison(w)
}

// boundNote says, for a failed target whose bound was measured, whether
// the bound met it in this run.
func (t Target) boundNote() string {
	if t.Pass == nil || *t.Pass || t.BoundPass == nil {
		return ""
	}
	reach := "out of reach in this run"
	if *t.BoundPass {
		reach = "within reach"
	}
	return fmt.Sprintf("   (bound %s %s: %s)", t.Bound, num(*t.BoundValue), reach)
}

// num prints a figure with about three significant digits.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
