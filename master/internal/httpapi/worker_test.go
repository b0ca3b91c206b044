package httpapi

import (
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// nextTask waits up to 10s for the next task sent to s, as a worker's
// stream handler would, and reports false if none came. Cancels are dropped.
func nextTask(s *dispatch.Session) (task.Assignment, bool) {
	deadline := time.After(10 * time.Second)
	for {
		for _, m := range s.Take() {
			if m.Task != nil {
				return *m.Task, true
			}
		}
		select {
		case <-s.Wake():
		case <-deadline:
			return task.Assignment{}, false
		}
	}
}
