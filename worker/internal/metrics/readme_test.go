package metrics

import (
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// TestREADMEMetrics: every metric a worker serves is a row of the README's
// table of the worker's metrics with its type and labels, and the table has
// no row for a metric the worker does not serve (the master's table,
// before it, is master/internal/metrics's to hold).
func TestREADMEMetrics(t *testing.T) {
	section := readme.SectionOf(t, "## Dashboard, events and metrics")
	_, table, ok := strings.Cut(section, "A worker with `WORKER_METRICS_ADDR` set")
	if !ok {
		t.Fatal("README's Dashboard, events and metrics does not say what a worker with WORKER_METRICS_ADDR serves")
	}
	table, _, _ = strings.Cut(table, "**Logs.**")
	rows := readme.MetricRows(table)

	m := New(func() bool { return true })
	m.TaskDone("succeeded", 0) // a vector shows only once it has a child
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var served []readme.Metric
	for _, f := range families {
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		served = append(served, readme.Metric{Name: f.GetName(), Type: strings.ToLower(f.GetType().String()), Labels: labels})
	}
	names := readme.CheckMetrics(t, "worker", rows, served)
	for name, r := range rows {
		if !names[name] {
			t.Errorf("README documents %s, which the worker does not serve: %s", name, r.Line)
		}
	}
}
