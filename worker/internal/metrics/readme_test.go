package metrics

import (
	"slices"
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
	rows := map[string]readme.Row{} // by the metric's name, labels left out
	for _, r := range readme.Rows(table) {
		for _, n := range r.Names {
			name, _, _ := strings.Cut(n, "{")
			rows[name] = r
		}
	}

	m := New(func() bool { return true })
	m.TaskDone("succeeded", 0) // a vector shows only once it has a child
	families, err := m.reg.Gather()
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
			t.Errorf("README's table of the worker's metrics has no row for %s", name)
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
			t.Errorf("README names %v, the worker serves %s", r.Names, want)
		}
		if typ := strings.ToLower(f.GetType().String()); len(r.Cells) < 2 || r.Cells[1] != typ {
			t.Errorf("README: %s is a %s, the table says %q", name, typ, r.Cells[1])
		}
	}
	for name, r := range rows {
		if !served[name] {
			t.Errorf("README documents %s, which the worker does not serve: %s", name, r.Line)
		}
	}
}
