package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// model is the store as it was before the task row held an attempt: the
// tasks' rows, and every attempt in one map by task and N.
type model struct {
	tasks map[string]task.Task
	atts  map[string]map[int]task.Attempt
}

func (m *model) clone() *model {
	c := &model{tasks: maps.Clone(m.tasks), atts: map[string]map[int]task.Attempt{}}
	for id, as := range m.atts {
		c.atts[id] = maps.Clone(as)
	}
	return c
}

var errModel = errors.New("model: constraint")

func (m *model) putAttempt(a task.Attempt) error {
	if _, ok := m.tasks[a.TaskID]; !ok {
		return errModel // the foreign key
	}
	if m.atts[a.TaskID] == nil {
		m.atts[a.TaskID] = map[int]task.Attempt{}
	}
	m.atts[a.TaskID][a.N] = a
	return nil
}

// apply applies ws all or nothing, as the store did before migration 8.
func (m *model) apply(ws []Write) error {
	for _, w := range ws {
		if w.Attempt != nil && w.Attempt.N < 1 {
			return errModel // refused whole: attempts are numbered from 1
		}
	}
	c := m.clone()
	for _, w := range ws {
		if t := w.Task; t != nil {
			old, ok := c.tasks[t.ID]
			switch {
			case w.Kind == Insert && ok:
				return errModel
			case w.Kind == Update && ok:
				nt := old
				nt.Status, nt.Attempts, nt.WorkerID, nt.ExitCode = t.Status, t.Attempts, t.WorkerID, t.ExitCode
				nt.Stdout, nt.Stderr, nt.StdoutCut, nt.StderrCut, nt.Error = t.Stdout, t.Stderr, t.StdoutCut, t.StderrCut, t.Error
				nt.AssignedAt, nt.StartedAt, nt.FinishedAt, nt.RunAt, nt.AttemptBase = t.AssignedAt, t.StartedAt, t.FinishedAt, t.RunAt, t.AttemptBase
				c.tasks[t.ID] = nt
			default:
				c.tasks[t.ID] = *t
			}
		}
		if a := w.Attempt; a != nil {
			old, ok := c.atts[a.TaskID][a.N]
			switch w.AttemptKind {
			case IfRunning:
				if ok && old.WorkerID == a.WorkerID && old.Outcome == task.OutcomeRunning {
					old.Outcome, old.Error, old.FinishedAt = a.Outcome, a.Error, a.FinishedAt
					c.atts[a.TaskID][a.N] = old
				}
			case IfAbsent:
				if !ok {
					if err := c.putAttempt(*a); err != nil {
						return err
					}
				}
			case Update:
				if ok {
					old.Outcome, old.ExitCode, old.Error, old.FinishedAt, old.Duplicate = a.Outcome, a.ExitCode, a.Error, a.FinishedAt, a.Duplicate
					c.atts[a.TaskID][a.N] = old
					break
				}
				fallthrough
			default:
				if err := c.putAttempt(*a); err != nil {
					return err
				}
			}
		}
	}
	*m = *c
	return nil
}

func (m *model) deleteFinished(cutoff time.Time) {
	for id, t := range m.tasks {
		if t.Status.Final() && nanos(t.FinishedAt) < nanos(cutoff) {
			delete(m.tasks, id)
			delete(m.atts, id)
		}
	}
}

func (m *model) get(id string) (task.Task, bool) {
	t, ok := m.tasks[id]
	if !ok {
		return task.Task{}, false
	}
	t.History = nil
	for _, n := range slices.Sorted(maps.Keys(m.atts[id])) {
		t.History = append(t.History, m.atts[id][n])
	}
	return utc(t), true
}

// gen makes random writes, often consistent with what the model holds so
// that the narrow statements (writeBoth, Update, IfRunning) match.
type gen struct {
	r   *rand.Rand
	m   *model
	ids []string
}

var (
	genStatuses = []task.Status{task.StatusQueued, task.StatusRunning, task.StatusSucceeded, task.StatusFailed}
	genOutcomes = []task.Outcome{task.OutcomeRunning, task.OutcomeSucceeded, task.OutcomeFailed, task.OutcomeLost}
	genWorkers  = []string{"w1", "w2"}
	genKinds    = []Kind{Upsert, Insert, Update, IfRunning, IfAbsent}
)

func (g *gen) exit() *int {
	if g.r.IntN(2) == 0 {
		return nil
	}
	return intp(g.r.IntN(2))
}

func (g *gen) task(id string) *task.Task {
	t := newTask(id, at(0), genStatuses[g.r.IntN(len(genStatuses))])
	cur, ok := g.m.tasks[id]
	if ok && g.r.IntN(3) > 0 {
		t.Attempts, t.WorkerID, t.AssignedAt, t.RunAt, t.AttemptBase = cur.Attempts, cur.WorkerID, cur.AssignedAt, cur.RunAt, cur.AttemptBase
		if g.r.IntN(3) == 0 {
			t.Attempts++
		}
	} else {
		t.Attempts, t.WorkerID, t.AssignedAt = g.r.IntN(4), genWorkers[g.r.IntN(2)], at(g.r.IntN(5))
	}
	t.ExitCode, t.Error = g.exit(), fmt.Sprint("e", g.r.IntN(3))
	t.StartedAt, t.FinishedAt = at(g.r.IntN(5)), at(g.r.IntN(20))
	if t.Status.Final() && g.r.IntN(4) == 0 {
		t.FinishedAt = time.Time{}
	}
	return t
}

func (g *gen) attempt(id string, n int, k Kind) *task.Attempt {
	a := &task.Attempt{TaskID: id, N: n, WorkerID: genWorkers[g.r.IntN(2)], Outcome: genOutcomes[g.r.IntN(len(genOutcomes))],
		ExitCode: g.exit(), Error: fmt.Sprint("a", g.r.IntN(3)), AssignedAt: at(g.r.IntN(5)), FinishedAt: at(g.r.IntN(20)),
		Duplicate: g.r.IntN(4) == 0}
	if cur, ok := g.m.atts[id][n]; ok && (k == Update || k == IfRunning && g.r.IntN(3) > 0) {
		a.WorkerID, a.AssignedAt = cur.WorkerID, cur.AssignedAt // as stored, as Update requires
	}
	return a
}

func (g *gen) write() Write {
	id := g.ids[g.r.IntN(len(g.ids))]
	var w Write
	if g.r.IntN(2) == 0 {
		w.Task = g.task(id)
		w.Kind = []Kind{Upsert, Insert, Update, Update, Update}[g.r.IntN(5)]
		if g.r.IntN(3) == 0 {
			return w
		}
	}
	w.AttemptKind = genKinds[g.r.IntN(len(genKinds))]
	n := 1 + g.r.IntN(4)
	if w.Task != nil && w.Task.Attempts > 0 && g.r.IntN(3) > 0 {
		n = w.Task.Attempts
		w.AttemptKind = []Kind{Insert, Update}[g.r.IntN(2)]
	}
	if g.r.IntN(8) == 0 {
		id = g.ids[g.r.IntN(len(g.ids))] // another task's attempt
	}
	if g.r.IntN(16) == 0 {
		n = 0 // not a delivery's number: Apply refuses the call
	}
	w.Attempt = g.attempt(id, n, w.AttemptKind)
	return w
}

func describe(ws []Write) string {
	s := ""
	for _, w := range ws {
		if w.Task != nil {
			s += fmt.Sprintf(" task %s kind %d status %s attempts %d;", w.Task.ID, w.Kind, w.Task.Status, w.Task.Attempts)
		}
		if w.Attempt != nil {
			s += fmt.Sprintf(" attempt %s/%d kind %d %+v;", w.Attempt.TaskID, w.Attempt.N, w.AttemptKind, *w.Attempt)
		}
	}
	return s
}

// The store behaves as the pre-migration-8 model for random sequences of
// writes and retention rounds, from an empty database and from one
// migrated from version 7 with attempts in the attempts table.
func TestStoreMatchesModel(t *testing.T) {
	ctx := context.Background()
	for run := range 20 { // about 1.5 s
		r := rand.New(rand.NewPCG(uint64(run), 8))
		m := &model{tasks: map[string]task.Task{}, atts: map[string]map[int]task.Attempt{}}
		ids := []string{"a", "b", "c"}[:2+run%2]
		path := filepath.Join(t.TempDir(), "roundhouse.db")
		if run%2 == 1 { // migrated from version 7
			old := openAt(t, path, 7)
			for _, id := range ids {
				tk := newTask(id, at(0), task.StatusRunning)
				tk.Attempts = 1 + r.IntN(3)
				if _, err := old.Exec(`INSERT INTO tasks (`+taskColumns+`) `+taskValues, taskArgs(tk)...); err != nil {
					t.Fatal(err)
				}
				m.tasks[id] = *tk
				for n := 1; n <= 3; n++ {
					if r.IntN(3) == 0 {
						continue
					}
					a := task.Attempt{TaskID: id, N: n, WorkerID: genWorkers[r.IntN(2)], Outcome: genOutcomes[r.IntN(len(genOutcomes))],
						AssignedAt: at(n), Error: "old"}
					if _, err := old.Exec(`INSERT INTO attempts (task_id, n, worker_id, outcome, exit_code, error, assigned_at, finished_at, duplicate)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, attemptArgs(&a)...); err != nil {
						t.Fatal(err)
					}
					m.putAttempt(a)
				}
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
		}
		s, err := Open(path, discard())
		if err != nil {
			t.Fatal(err)
		}
		g := &gen{r: r, m: m, ids: ids}
		var log []string
		for step := range 50 {
			if r.IntN(12) == 0 {
				cutoff := at(r.IntN(20))
				if _, err := s.DeleteFinished(ctx, cutoff, 100); err != nil {
					t.Fatal(err)
				}
				m.deleteFinished(cutoff)
				log = append(log, fmt.Sprintf("%d: delete finished before %d", step, cutoff.Second()))
			} else {
				ws := make([]Write, 1+r.IntN(2))
				for i := range ws {
					ws[i] = g.write()
				}
				log = append(log, fmt.Sprintf("%d:%s", step, describe(ws)))
				wantErr := m.apply(ws)
				gotErr := <-s.Apply(ws...)
				if (wantErr == nil) != (gotErr == nil) {
					t.Fatalf("run %d: error %v, model's %v, after\n%s", run, gotErr, wantErr, join(log))
				}
			}
			for _, id := range ids {
				want, ok := m.get(id)
				got, err := s.Get(ctx, id)
				if !ok {
					if !errors.Is(err, task.ErrNotFound) {
						t.Fatalf("run %d: Get(%s) = %+v, %v; want not found, after\n%s", run, id, got, err, join(log))
					}
					continue
				}
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("run %d: Get(%s):\n got %+v %v\nwant %+v\nafter\n%s", run, id, got, err, want, join(log))
				}
			}
		}
		s.Close()
	}
}

func join(ss []string) string {
	out := ""
	for _, s := range ss {
		out += s + "\n"
	}
	return out
}
