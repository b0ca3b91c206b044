package store

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// The knobs of TestStoreMatchesModel, for a longer soak than the default
// run (20 seeds, about 2 s; 8 under the race detector), e.g.
//
//	go test ./internal/store -run TestStoreMatchesModel -args -store.model-runs=2000
//
// and -store.model-from=N to start at run (seed) N, to replay a failure.
var (
	modelRuns = flag.Int("store.model-runs", 0, "TestStoreMatchesModel: how many random sequences (seeds) to run; 0: 20, or 8 under -race")
	modelFrom = flag.Int("store.model-from", 0, "TestStoreMatchesModel: the first seed")
)

// model is the store as it was before the task row held an attempt: the
// tasks' rows, and every attempt in one map by task and N. lastN is the
// one thing it keeps of migration 8, for Unended: the N of the attempt the
// task's row holds (0 for none), the highest N written whole.
type model struct {
	tasks map[string]task.Task
	atts  map[string]map[int]task.Attempt
	lastN map[string]int
}

func newModel() *model {
	return &model{tasks: map[string]task.Task{}, atts: map[string]map[int]task.Attempt{}, lastN: map[string]int{}}
}

func (m *model) clone() *model {
	c := &model{tasks: maps.Clone(m.tasks), atts: map[string]map[int]task.Attempt{}, lastN: maps.Clone(m.lastN)}
	for id, as := range m.atts {
		c.atts[id] = maps.Clone(as)
	}
	return c
}

// The model's errors: a call the store must refuse (errModelInvalid, as
// task.ErrInvalid), one whose idempotency key another task holds
// (errModelConflict, as task.ErrConflict), any other constraint.
var (
	errModel         = errors.New("model: constraint")
	errModelConflict = errors.New("model: idempotency key taken")
	errModelInvalid  = errors.New("model: attempt numbered below 1")
)

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

// putWhole writes a whole attempt, which the store puts in its task's row
// if it is as new as the row's.
func (m *model) putWhole(a task.Attempt) error {
	if err := m.putAttempt(a); err != nil {
		return err
	}
	m.lastN[a.TaskID] = max(m.lastN[a.TaskID], a.N)
	return nil
}

// apply applies ws all or nothing, as the store did before migration 8.
func (m *model) apply(ws []Write) error {
	for _, w := range ws {
		if w.Attempt != nil && w.Attempt.N < 1 {
			return errModelInvalid // refused whole: attempts are numbered from 1
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
			// The unique index on idempotency_key, checked per statement.
			if key := c.tasks[t.ID].IdempotencyKey; key != "" {
				for id, o := range c.tasks {
					if id != t.ID && o.IdempotencyKey == key {
						return errModelConflict
					}
				}
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
					if err := c.putAttempt(*a); err != nil { // into attempts, not the row
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
				if err := c.putWhole(*a); err != nil {
					return err
				}
			}
		}
	}
	*m = *c
	return nil
}

// finishedBefore are the tasks DeleteFinished may delete.
func (m *model) finishedBefore(cutoff time.Time) []string {
	var ids []string
	for id, t := range m.tasks {
		if t.Status.Final() && nanos(t.FinishedAt) < nanos(cutoff) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (m *model) delete(id string) {
	delete(m.tasks, id)
	delete(m.atts, id)
	delete(m.lastN, id)
}

// deleteFinished is DeleteFinished with a limit above the tasks held.
func (m *model) deleteFinished(cutoff time.Time) int {
	ids := m.finishedBefore(cutoff)
	for _, id := range ids {
		m.delete(id)
	}
	return len(ids)
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

// live is Live: the scheduled, queued and running tasks by CreatedAt, then
// ID, without History.
func (m *model) live() []task.Task {
	var ts []task.Task
	for _, t := range m.tasks {
		if !t.Status.Final() {
			ts = append(ts, utc(t))
		}
	}
	slices.SortFunc(ts, func(a, b task.Task) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return ts
}

// list is every task List returns for q, over all its pages: newest (the
// highest ID) first, without History and output.
func (m *model) list(q Query) []task.Task {
	var ts []task.Task
	for _, t := range m.tasks {
		if len(q.Statuses) > 0 && !slices.Contains(q.Statuses, t.Status) ||
			q.WorkerID != "" && t.WorkerID != q.WorkerID ||
			!strings.Contains(strings.ToLower(t.Cmd), strings.ToLower(q.Cmd)) {
			continue
		}
		t = utc(t)
		t.Stdout, t.Stderr = "", ""
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b task.Task) int { return strings.Compare(b.ID, a.ID) })
	return ts
}

// unended is Unended: the final tasks whose row's attempt is running.
func (m *model) unended() []Run {
	var runs []Run
	for id, t := range m.tasks {
		if n := m.lastN[id]; n > 0 && t.Status.Final() && m.atts[id][n].Outcome == task.OutcomeRunning {
			runs = append(runs, Run{TaskID: id, N: n, WorkerID: m.atts[id][n].WorkerID})
		}
	}
	return sortRuns(runs)
}

func sortRuns(runs []Run) []Run {
	slices.SortFunc(runs, func(a, b Run) int { return strings.Compare(a.TaskID, b.TaskID) })
	return runs
}

// gen makes random writes, often consistent with what the model holds so
// that the narrow statements (writeBoth, Update, IfRunning) match.
type gen struct {
	r   *rand.Rand
	m   *model
	ids []string
}

var (
	genOutcomes = []task.Outcome{task.OutcomeRunning, task.OutcomeSucceeded, task.OutcomeFailed, task.OutcomeLost}
	genWorkers  = []string{"w1", "w2"}
	genKinds    = []Kind{Upsert, Insert, Update, IfRunning, IfAbsent}
	genKeys     = []string{"", "", "", "k1", "k2"}
)

func (g *gen) exit() *int {
	if g.r.IntN(2) == 0 {
		return nil
	}
	return intp(g.r.IntN(2))
}

func (g *gen) task(id string) *task.Task {
	t := newTask(id, at(g.r.IntN(3)), task.Statuses[g.r.IntN(len(task.Statuses))])
	t.IdempotencyKey = genKeys[g.r.IntN(len(genKeys))]
	cur, ok := g.m.tasks[id]
	if ok && g.r.IntN(3) > 0 {
		t.Attempts, t.WorkerID, t.AssignedAt, t.RunAt, t.AttemptBase = cur.Attempts, cur.WorkerID, cur.AssignedAt, cur.RunAt, cur.AttemptBase
		switch g.r.IntN(6) {
		case 0, 1:
			t.Attempts++
		case 2:
			t.AttemptBase++
		}
	} else {
		t.Attempts, t.WorkerID, t.AssignedAt = g.r.IntN(4), []string{"", "w1", "w2"}[g.r.IntN(3)], at(g.r.IntN(5))
		t.AttemptBase = g.r.IntN(2)
		if t.Status == task.StatusScheduled || g.r.IntN(4) == 0 {
			t.RunAt = at(g.r.IntN(20))
		}
	}
	t.ExitCode, t.Error = g.exit(), fmt.Sprint("e", g.r.IntN(3))
	if g.r.IntN(2) == 0 {
		t.Stdout, t.Stderr = fmt.Sprint("out", g.r.IntN(3)), "err"
	}
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

// query makes a random List filter and page size.
func (g *gen) query() Query {
	var q Query
	for _, st := range task.Statuses {
		if g.r.IntN(4) == 0 {
			q.Statuses = append(q.Statuses, st)
		}
	}
	if g.r.IntN(2) == 0 {
		q.Statuses = nil
	}
	q.WorkerID = []string{"", "", "", "w1", "w2", "w3"}[g.r.IntN(6)]
	q.Cmd = []string{"", "", "", "", "ECHO", "o b", "_"}[g.r.IntN(7)]
	q.Limit = 1 + g.r.IntN(2)
	return q
}

func describe(ws []Write) string {
	s := ""
	for _, w := range ws {
		if w.Task != nil {
			s += fmt.Sprintf(" task %s kind %d status %s attempts %d key %q;", w.Task.ID, w.Kind, w.Task.Status, w.Task.Attempts, w.Task.IdempotencyKey)
		}
		if w.Attempt != nil {
			s += fmt.Sprintf(" attempt %s/%d kind %d %+v;", w.Attempt.TaskID, w.Attempt.N, w.AttemptKind, *w.Attempt)
		}
	}
	return s
}

// The store behaves as the pre-migration-8 model for random sequences of
// writes, retention rounds and restarts, from an empty database and from
// one migrated from version 7 with attempts in the attempts table.
//
// Each step is one of: 1 to 4 Apply calls (and now and then a
// DeleteFinished) queued while the writer is held, so that they share one
// group commit, where a call that must fail (an attempt numbered below 1,
// a task inserted twice, an attempt of no task, a taken idempotency key)
// fails alone; the same queued without holding the writer; the same
// followed at once by Close, which must commit them all, and a reopen; a
// DeleteFinished alone; a close and reopen. After each, every read (Get,
// Live, Unended, FindByIdempotencyKey, and List through pages of 1 or 2
// with random filters) agrees with the model.
func TestStoreMatchesModel(t *testing.T) {
	runs := *modelRuns
	if runs == 0 {
		runs = 20
		if raceEnabled {
			runs = 8
		}
	}
	for run := *modelFrom; run < *modelFrom+runs; run++ {
		runModel(t, run)
	}
}

// modelRun is one random sequence of TestStoreMatchesModel.
type modelRun struct {
	t    *testing.T
	run  int
	r    *rand.Rand
	m    *model
	g    *gen
	ids  []string
	path string
	s    *Store
	log  []string
}

func (mr *modelRun) fatalf(format string, args ...any) {
	mr.t.Helper()
	mr.t.Fatalf("run %d (-store.model-from=%d -store.model-runs=1): %s\nafter\n%s", mr.run, mr.run, fmt.Sprintf(format, args...), join(mr.log))
}

func (mr *modelRun) logf(format string, args ...any) {
	mr.log = append(mr.log, fmt.Sprintf(format, args...))
}

// The tasks columns of version 7, the first of taskColumns: the later
// migrations added the rest.
var (
	v7Columns = strings.TrimSuffix(strings.TrimSpace(strings.Split(taskColumns, "attempt_base")[0]), ",") + ", attempt_base"
	v7Count   = len(strings.Split(v7Columns, ","))
	v7Values  = "VALUES (?" + strings.Repeat(", ?", v7Count-1) + ")"
)

func runModel(t *testing.T, run int) {
	r := rand.New(rand.NewPCG(uint64(run), 8))
	m := newModel()
	ids := []string{"a", "b", "c", "d", "e"}[:2+run%4]
	path := filepath.Join(t.TempDir(), "roundhouse.db")
	if run%2 == 1 { // migrated from version 7
		old := openAt(t, path, 7)
		for _, id := range ids {
			tk := newTask(id, at(r.IntN(3)), task.StatusRunning)
			tk.Attempts = 1 + r.IntN(3)
			if _, err := old.Exec(`INSERT INTO tasks (`+v7Columns+`) `+v7Values, taskArgs(tk)[:v7Count]...); err != nil {
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
				m.putAttempt(a) // in attempts: the row's last_n stays 0
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
	}
	mr := &modelRun{t: t, run: run, r: r, m: m, g: &gen{r: r, m: m, ids: ids}, ids: ids, path: path}
	mr.reopen()
	defer func() { mr.s.Close() }()
	for step := range 40 {
		switch k := r.IntN(20); {
		case k == 0:
			mr.logf("%d: close and reopen", step)
			if err := mr.s.Close(); err != nil {
				mr.fatalf("Close: %v", err)
			}
			mr.reopen()
		case k < 3:
			mr.deleteSome(step)
		case k == 3:
			mr.group(step, "queued, then Close")
		case k < 7:
			mr.group(step, "queued")
		default:
			mr.group(step, "queued behind the held writer")
		}
		mr.check()
	}
}

// deleteSome runs DeleteFinished with a limit of 1 to 3, alone, and checks
// that it deleted as many as it may of the tasks that finished before the
// cutoff, the oldest: which of those finished at the same time is not
// said, so the model learns that from the store.
func (mr *modelRun) deleteSome(step int) {
	ctx := context.Background()
	cutoff, limit := at(mr.r.IntN(20)), 1+mr.r.IntN(3)
	mr.logf("%d: delete finished before %d, limit %d", step, cutoff.Second(), limit)
	n, err := mr.s.DeleteFinished(ctx, cutoff, limit)
	ids := mr.m.finishedBefore(cutoff)
	if err != nil || n != min(limit, len(ids)) {
		mr.fatalf("DeleteFinished = %d, %v; want %d of %v", n, err, min(limit, len(ids)), ids)
	}
	var gone, kept []task.Task
	for _, id := range ids {
		_, err := mr.s.Get(ctx, id)
		switch {
		case errors.Is(err, task.ErrNotFound):
			gone = append(gone, mr.m.tasks[id])
		case err == nil:
			kept = append(kept, mr.m.tasks[id])
		default:
			mr.fatalf("Get(%s): %v", id, err)
		}
	}
	if len(gone) != n {
		mr.fatalf("DeleteFinished = %d; %d of %v gone", n, len(gone), ids)
	}
	for _, g := range gone {
		for _, k := range kept {
			if nanos(g.FinishedAt) > nanos(k.FinishedAt) {
				mr.fatalf("DeleteFinished deleted %s (finished %v) before %s (finished %v)", g.ID, g.FinishedAt, k.ID, k.FinishedAt)
			}
		}
		mr.m.delete(g.ID)
	}
}

func (mr *modelRun) reopen() {
	s, err := Open(mr.path, discard())
	if err != nil {
		mr.fatalf("Open: %v", err)
	}
	mr.s = s
}

// queueLen is how many requests wait for the writer.
func queueLen(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// group queues 1 to 4 calls together, as mode says, and checks that each
// gets the model's answer.
func (mr *modelRun) group(step int, mode string) {
	ctx := context.Background()
	s, m := mr.s, mr.m
	held := mode == "queued behind the held writer"
	release := func() {}
	heldErr := make(chan error, 1)
	commits := s.commits.Load()
	if held {
		// A request that keeps the writer inside its transaction until
		// the calls below are queued: the writer then takes them all at
		// once.
		started, hold := make(chan struct{}), make(chan struct{})
		release = sync.OnceFunc(func() { close(hold) })
		defer release() // should the test fail first: Close waits for the writer
		go func() {
			heldErr <- s.runOnce(ctx, "hold the writer", 0, func(context.Context) error {
				close(started)
				<-hold
				return nil
			})
		}()
		<-started
	}

	type call struct {
		what    string
		want    error         // the model's answer
		ch      <-chan error  // an Apply's
		deleted chan deletion // a DeleteFinished's
		del     int           // the model's count
	}
	var calls []call
	queued, failed := 0, 0 // requests that reached the queue; of those, the model's failures
	for range 1 + mr.r.IntN(4) {
		if held && mr.r.IntN(8) == 0 {
			// A retention round among the writes, in order with them: it
			// is queued once queueLen says so (the writer is held).
			cutoff := at(mr.r.IntN(20))
			c := call{what: fmt.Sprintf("delete finished before %d", cutoff.Second()), deleted: make(chan deletion, 1)}
			c.del = m.deleteFinished(cutoff)
			n := queueLen(s)
			go func() {
				k, err := s.DeleteFinished(ctx, cutoff, 100)
				c.deleted <- deletion{k, err}
			}()
			for queueLen(s) == n {
				runtime.Gosched()
			}
			queued++
			calls = append(calls, c)
			continue
		}
		ws := make([]Write, 1+mr.r.IntN(2))
		for i := range ws {
			ws[i] = mr.g.write()
		}
		c := call{what: describe(ws), want: m.apply(ws)}
		c.ch = s.Apply(ws...)
		if !errors.Is(c.want, errModelInvalid) {
			queued++
			if c.want != nil {
				failed++
			}
		}
		calls = append(calls, c)
	}
	mr.logf("%d: %s:", step, mode)
	for i, c := range calls {
		mr.logf("  call %d:%s -> model's %v", i, c.what, c.want)
	}

	if held {
		release()
		if err := mr.answer(heldErr); err != nil {
			mr.fatalf("the held request: %v", err)
		}
	}
	if mode == "queued, then Close" {
		if err := s.Close(); err != nil {
			mr.fatalf("Close: %v", err)
		}
	}
	for i, c := range calls {
		if c.deleted != nil {
			if d := mr.deletion(c.deleted); d.err != nil || d.n != c.del {
				mr.fatalf("call %d: DeleteFinished = %d, %v; want %d", i, d.n, d.err, c.del)
			}
			continue
		}
		err := mr.answer(c.ch)
		switch {
		case (err == nil) != (c.want == nil),
			errors.Is(c.want, errModelInvalid) != errors.Is(err, task.ErrInvalid),
			errors.Is(c.want, errModelConflict) && !errors.Is(err, task.ErrConflict):
			mr.fatalf("call %d: error %v; model's %v", i, err, c.want)
		}
	}
	if held {
		// The held request's commit, then one for the group; or, when a
		// call in it failed, one for each call that did not, tried alone.
		want := int64(1)
		switch {
		case queued == 0:
		case failed == 0:
			want++
		case queued > 1:
			want += int64(queued - failed)
		}
		if got := s.commits.Load() - commits; got != want {
			mr.fatalf("%d commits; want %d (%d requests queued, %d failing)", got, want, queued, failed)
		}
	}
	if mode == "queued, then Close" {
		mr.reopen()
	}
}

// answerWithin bounds the wait for an answer the store owes: a store that
// dropped a request fails the test rather than hanging it.
const answerWithin = 30 * time.Second

func (mr *modelRun) answer(ch <-chan error) error {
	mr.t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(answerWithin):
		mr.fatalf("no answer within %s", answerWithin)
		return nil
	}
}

func (mr *modelRun) deletion(ch <-chan deletion) deletion {
	mr.t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(answerWithin):
		mr.fatalf("no answer from DeleteFinished within %s", answerWithin)
		return deletion{}
	}
}

type deletion struct {
	n   int
	err error
}

// check compares every read with the model.
func (mr *modelRun) check() {
	ctx := context.Background()
	s, m := mr.s, mr.m
	for _, id := range mr.ids {
		want, ok := m.get(id)
		got, err := s.Get(ctx, id)
		if !ok {
			if !errors.Is(err, task.ErrNotFound) {
				mr.fatalf("Get(%s) = %+v, %v; want not found", id, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			mr.fatalf("Get(%s):\n got %+v %v\nwant %+v", id, got, err, want)
		}
	}

	live, err := s.Live(ctx)
	if want := m.live(); err != nil || !reflect.DeepEqual(live, want) {
		mr.fatalf("Live:\n got %+v %v\nwant %+v", live, err, want)
	}

	runs, err := s.Unended(ctx)
	if want := m.unended(); err != nil || !reflect.DeepEqual(sortRuns(runs), want) {
		mr.fatalf("Unended = %+v, %v; want %+v", runs, err, want)
	}

	for _, key := range genKeys[len(genKeys)-2:] {
		got, err := s.FindByIdempotencyKey(ctx, key)
		var want *task.Task
		for _, t := range m.tasks {
			if t.IdempotencyKey == key {
				t = utc(t)
				t.History = nil
				want = &t
			}
		}
		switch {
		case want == nil && !errors.Is(err, task.ErrNotFound),
			want != nil && (err != nil || !reflect.DeepEqual(got, *want)):
			mr.fatalf("FindByIdempotencyKey(%s) = %+v, %v; want %+v", key, got, err, want)
		}
	}

	for range 2 {
		q := mr.g.query()
		want := m.list(q)
		seen := map[string]bool{}
		for i, pages := 0, 0; ; pages++ {
			p, err := s.List(ctx, q)
			if err != nil {
				mr.fatalf("List(%+v): %v", q, err)
			}
			for _, got := range p.Tasks {
				if seen[got.ID] {
					mr.fatalf("List(%+v): page %d repeats %s", q, pages, got.ID)
				}
				seen[got.ID] = true
			}
			end := min(i+q.Limit, len(want))
			if !reflect.DeepEqual(p.Tasks, want[i:end]) && (len(p.Tasks) > 0 || end > i) {
				mr.fatalf("List(%+v): page %d\n got %+v\nwant %+v", q, pages, p.Tasks, want[i:end])
			}
			if (p.Next == "") != (end == len(want)) {
				mr.fatalf("List(%+v): page %d of %d tasks from %d: next %q", q, pages, len(want), i, p.Next)
			}
			if p.Next == "" {
				break
			}
			i, q.Cursor = end, p.Next
		}
		if len(seen) != len(want) {
			mr.fatalf("List(%+v): %d tasks over its pages; want %d", q, len(seen), len(want))
		}
	}
}

func join(ss []string) string {
	out := ""
	for _, s := range ss {
		out += s + "\n"
	}
	return out
}
