package metrics

import (
	"regexp"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/proto/readme"
)

// workerMetrics introduces the worker's metrics table, after the master's.
const workerMetrics = "A worker with `WORKER_METRICS_ADDR` set"

// TestREADMEMetrics: every metric the master serves, registered as main
// registers them, is a row of the README's metrics table with its type and
// labels, and the table has no row for a metric it does not serve.
func TestREADMEMetrics(t *testing.T) {
	section := readme.SectionOf(t, "## Dashboard, events and metrics")
	_, table, ok := strings.Cut(section, "**Metrics.**")
	if !ok {
		t.Fatal("README's Dashboard, events and metrics has no **Metrics.** table")
	}
	// The worker's table follows; worker/internal/metrics holds it.
	table, _, _ = strings.Cut(table, workerMetrics)
	rows := readme.MetricRows(table)

	m := New(func() dispatch.Stats { return dispatch.Stats{} })
	m.LiveOutput(func() uint64 { return 0 })
	m.Store(func() store.Counts { return store.Counts{} })
	// A vector shows only once it has a child.
	m.Observe(events.Event{Type: events.TaskFinished, Status: "succeeded", WorkerID: "w1"})
	m.Observe(events.Event{Type: events.TaskRequeued, Reason: "worker_timed_out"})
	families, err := m.Registry().Gather()
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
	names := readme.CheckMetrics(t, "master", rows, served)
	for name, r := range rows {
		if !names[name] && regexp.MustCompile(`^[a-z_]+\*?$`).MatchString(name) {
			t.Errorf("README documents %s, which the master does not serve: %s", name, r.Line)
		}
	}
}
