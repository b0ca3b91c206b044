package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// queueJSON is GET /queue: what waits in the master, and why.
type queueJSON struct {
	Queued     int            `json:"queued"`
	ByPriority map[string]int `json:"by_priority"` // "1" to "5", every one present
	Scheduled  int            `json:"scheduled"`
	NextRunAt  *time.Time     `json:"next_run_at"` // null with nothing scheduled
	Groups     []groupJSON    `json:"groups"`      // the most queued first
}

// groupJSON is the queued tasks that require the same labels.
type groupJSON struct {
	Requires   map[string]string `json:"requires"` // {}: any worker
	Queued     int               `json:"queued"`
	Eligible   int               `json:"eligible"`    // connected workers that could run them
	WaitingFor *string           `json:"waiting_for"` // null while some worker could
}

func (a *api) getQueue(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r); err != nil {
		a.writeError(w, err)
		return
	}
	b := a.d.Backlog()
	out := queueJSON{Queued: b.Queued, ByPriority: make(map[string]int, len(b.ByPriority)), Scheduled: b.Scheduled,
		NextRunAt: nonZero(b.NextRunAt), Groups: make([]groupJSON, 0, len(b.Groups))}
	for i, n := range b.ByPriority {
		out.ByPriority[strconv.Itoa(i+task.MinPriority)] = n
	}
	for _, g := range b.Groups {
		out.Groups = append(out.Groups, groupJSON{Requires: orEmpty(g.Requires), Queued: g.Queued, Eligible: g.Eligible, WaitingFor: nonEmpty(g.WaitingFor)})
	}
	writeJSON(w, http.StatusOK, out)
}

type workerJSON struct {
	ID          string            `json:"id"`
	State       string            `json:"state"` // active or draining
	Slots       int               `json:"slots"`
	Labels      map[string]string `json:"labels"` // {} when none
	ConnectedAt time.Time         `json:"connected_at"`
	LastSeen    time.Time         `json:"last_seen"`
	Running     int               `json:"running"`
	Completed   int               `json:"completed"`
	Next        bool              `json:"next"` // first in line for the next task
}

type workersJSON struct {
	WorkerCount int          `json:"workerCount"` // the old clients read this name
	Workers     []workerJSON `json:"workers"`
}

func (a *api) listWorkers(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r); err != nil {
		a.writeError(w, err)
		return
	}
	ws := a.d.Workers()
	out := workersJSON{WorkerCount: len(ws), Workers: make([]workerJSON, 0, len(ws))}
	for _, x := range ws {
		state := "active"
		if x.Draining {
			state = "draining"
		}
		out.Workers = append(out.Workers, workerJSON{ID: x.ID, State: state, Slots: x.Slots, Labels: orEmpty(x.Labels), ConnectedAt: x.ConnectedAt,
			LastSeen: x.LastSeen, Running: x.Running, Completed: x.Completed, Next: x.Next})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := a.ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
