package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"github.com/roundhouse-lab/roundhouse/worker/internal/metrics"
)

// The worker's metrics follow its runs and its connection, as a scrape
// shows them.
func TestMetricsFollowRunsAndReconnects(t *testing.T) {
	f := newFakeMaster()
	gs, addr := serve(t, f, "127.0.0.1:0")
	var a *Agent
	m := metrics.New(func() bool { return a.Registered() })
	a = New(Config{MasterAddr: addr, WorkerID: "w1", Slots: 2, MaxOutput: 1024, ReconnectMax: 200 * time.Millisecond, Observer: m},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		return rec.Body.String()
	}
	expect := func(when string, lines ...string) {
		t.Helper()
		got := scrape()
		for _, l := range lines {
			if !strings.Contains(got, l+"\n") {
				t.Errorf("%s: /metrics lacks %q", when, l)
			}
		}
	}
	recv(t, f.registrations, "registration")
	eventually(t, a.Registered, "not registered")
	expect("registered", "roundhouse_worker_connected 1", "roundhouse_worker_reconnects_total 0", "# TYPE go_goroutines gauge")

	slow := task("t3", "sleep 30")
	slow.Timeout = durationpb.New(100 * time.Millisecond)
	for _, tk := range []*pb.Task{task("t1", "true"), task("t2", "exit 2"), slow} {
		f.tasks <- tk
		recv(t, f.reports, "report")
	}
	expect("after three runs",
		`roundhouse_worker_tasks_total{outcome="succeeded"} 1`,
		`roundhouse_worker_tasks_total{outcome="failed"} 1`,
		`roundhouse_worker_tasks_total{outcome="timed_out"} 1`,
		"roundhouse_worker_task_run_seconds_count 3")

	gs.Stop()
	eventually(t, func() bool { return !a.Registered() }, "still registered after the master stopped")
	expect("master gone", "roundhouse_worker_connected 0")
	serve(t, f, addr)
	recv(t, f.registrations, "registration after the restart")
	eventually(t, a.Registered, "not registered again")
	expect("reconnected", "roundhouse_worker_connected 1", "roundhouse_worker_reconnects_total 1")
}
