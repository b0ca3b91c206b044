package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Backlog is what waits in the master, for GET /queue, /metrics and the
// dashboard.
type Backlog struct {
	Queued     int                   // tasks waiting for a worker
	ByPriority [task.MaxPriority]int // of Queued, by priority: [0] is priority 1
	Scheduled  int                   // tasks waiting for their run time
	NextRunAt  time.Time             // the earliest run time of a scheduled task; zero with none
	// Groups has one entry per requirement set with queued tasks, the most
	// tasks first: how many wait, how many connected workers could run
	// them, and, when none can, why (WaitingFor).
	Groups []Group
}

// Group is the queued tasks that require the same labels.
type Group struct {
	Requires   map[string]string // empty: any worker
	Queued     int
	Eligible   int    // connected workers with every required label
	WaitingFor string // set when no connected worker can run them
}

// Backlog counts what waits now.
func (d *Dispatcher) Backlog() Backlog {
	return Backlog{}
}

// Retry runs a final task again as a new attempt, keeping its history, with
// a fresh budget of MaxAttempts deliveries. A task that is not final is a
// conflict.
func (d *Dispatcher) Retry(ctx context.Context, id string) (task.Task, error) {
	return task.Task{}, fmt.Errorf("%w: not yet", task.ErrConflict)
}
