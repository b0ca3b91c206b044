package metrics

import (
	"regexp"
	"slices"
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
	rows := map[string]readme.Row{} // by the metric's name, labels left out
	for _, r := range readme.Rows(table) {
		for _, n := range r.Names {
			name, _, _ := strings.Cut(n, "{")
			rows[name] = r
		}
	}

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
	served := map[string]bool{}
	for _, f := range families {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			name = name[:strings.Index(name, "_")+1] + "*"
		}
		served[name] = true
		r, ok := rows[name]
		if !ok {
			t.Errorf("README's metrics table has no row for %s", name)
			continue
		}
		if name != f.GetName() {
			continue
		}
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		want := name
		if len(labels) > 0 {
			want += "{" + strings.Join(labels, ",") + "}"
		}
		if !slices.Contains(r.Names, want) {
			t.Errorf("README names %v, the master serves %s", r.Names, want)
		}
		if typ := strings.ToLower(f.GetType().String()); len(r.Cells) < 2 || r.Cells[1] != typ {
			t.Errorf("README: %s is a %s, the table says %q", name, typ, r.Cells[1])
		}
	}
	for name, r := range rows {
		if !served[name] && regexp.MustCompile(`^[a-z_]+\*?$`).MatchString(name) {
			t.Errorf("README documents %s, which the master does not serve: %s", name, r.Line)
		}
	}
}
