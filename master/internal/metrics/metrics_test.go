package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

// The gauges show the dispatcher's counts, every priority included, all
// from one reading per scrape.
func TestGaugesReadStatsOncePerScrape(t *testing.T) {
	calls := 0
	m := New(func() dispatch.Stats {
		calls++
		return dispatch.Stats{Queued: 6, ByPriority: [5]int{1, 0, 2, 0, 3}, Scheduled: 4, Running: 2, Workers: 3}
	})
	const want = `
# HELP roundhouse_queue_depth Tasks waiting for a worker.
# TYPE roundhouse_queue_depth gauge
roundhouse_queue_depth 6
# HELP roundhouse_queue_depth_by_priority Tasks waiting for a worker, by priority (1 most urgent, to 5); a free worker takes the most urgent it can run.
# TYPE roundhouse_queue_depth_by_priority gauge
roundhouse_queue_depth_by_priority{priority="1"} 1
roundhouse_queue_depth_by_priority{priority="2"} 0
roundhouse_queue_depth_by_priority{priority="3"} 2
roundhouse_queue_depth_by_priority{priority="4"} 0
roundhouse_queue_depth_by_priority{priority="5"} 3
# HELP roundhouse_tasks_scheduled Tasks waiting for their run time: delayed, or backing off before a retry.
# TYPE roundhouse_tasks_scheduled gauge
roundhouse_tasks_scheduled 4
# HELP roundhouse_tasks_inflight Tasks assigned to a worker and not finished.
# TYPE roundhouse_tasks_inflight gauge
roundhouse_tasks_inflight 2
# HELP roundhouse_workers_connected Workers in the rotation.
# TYPE roundhouse_workers_connected gauge
roundhouse_workers_connected 3
`
	err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "roundhouse_queue_depth", "roundhouse_queue_depth_by_priority",
		"roundhouse_tasks_scheduled", "roundhouse_tasks_inflight", "roundhouse_workers_connected")
	if err != nil {
		t.Error(err)
	}
	if calls != 1 {
		t.Errorf("one scrape read the stats %d times, want once", calls)
	}
}

// A task counts as submitted once: queued at once or scheduled for later,
// not again when its time comes, when it waits to retry, or when it is
// retried by hand.
func TestSubmittedCountsEachTaskOnce(t *testing.T) {
	m := New(func() dispatch.Stats { return dispatch.Stats{} })
	for _, e := range []events.Event{
		{Type: events.TaskQueued},
		{Type: events.TaskScheduled, Reason: "delayed"},
		{Type: events.TaskQueued, Reason: "due"},
		{Type: events.TaskScheduled, Reason: "retry"},
		{Type: events.TaskQueued, Reason: "retried"},
	} {
		m.Observe(e)
	}
	if got := testutil.ToFloat64(m.submitted); got != 2 {
		t.Fatalf("roundhouse_tasks_submitted_total = %v after two submissions, want 2", got)
	}
}
