package store

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A task's life as the dispatcher writes it: inserted, then updated with
// its delivery, then with its result. Each step reads back as written.
func TestKindsLifecycle(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t1", at(0), task.StatusQueued)
	tk.IdempotencyKey, tk.Priority, tk.Requires = "key", 5, map[string]string{"gpu": "1"}
	tk.RetryOn, tk.Backoff, tk.MaxBackoff = []task.Outcome{task.OutcomeFailed}, time.Second, time.Minute
	apply(t, s, Write{Task: tk, Kind: Insert})
	if got := mustGet(t, s, "t1"); !reflect.DeepEqual(got, utc(*tk)) {
		t.Fatalf("after Insert:\n got %+v\nwant %+v", got, utc(*tk))
	}

	running := *tk
	running.Status, running.Attempts, running.WorkerID, running.AssignedAt, running.StartedAt = task.StatusRunning, 1, "w1", at(1), at(1)
	a1 := task.Attempt{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	apply(t, s, Write{Task: &running, Kind: Update, Attempt: &a1, AttemptKind: Insert})
	want := running
	want.History = []task.Attempt{a1}
	if got := mustGet(t, s, "t1"); !reflect.DeepEqual(got, utc(want)) {
		t.Fatalf("after the delivery's Update:\n got %+v\nwant %+v", got, utc(want))
	}

	// Every column an Update sets changes here.
	done := running
	done.Status, done.ExitCode, done.FinishedAt, done.StartedAt = task.StatusFailed, intp(3), at(3), at(2)
	done.Stdout, done.Stderr, done.StdoutCut, done.StderrCut, done.Error = "out", "err", true, true, "exit status 3"
	done.WorkerID, done.RunAt, done.AttemptBase, done.Attempts = "w2", at(9), 1, 2
	a1done := a1
	a1done.Outcome, a1done.ExitCode, a1done.Error, a1done.FinishedAt, a1done.Duplicate = task.OutcomeFailed, intp(3), "exit status 3", at(3), true
	apply(t, s, Write{Task: &done, Kind: Update, Attempt: &a1done, AttemptKind: Update})
	want = done
	want.History = []task.Attempt{a1done}
	if got := mustGet(t, s, "t1"); !reflect.DeepEqual(got, utc(want)) {
		t.Fatalf("after the result's Update:\n got %+v\nwant %+v", got, utc(want))
	}
}

// An Update sets only what changes after submission: it is no way to
// change the rest (which the dispatcher never does).
func TestUpdateLeavesSubmissionAlone(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t1", at(0), task.StatusQueued)
	apply(t, s, Write{Task: tk, Kind: Insert})
	changed := *tk
	changed.Cmd, changed.Priority, changed.Status = "rm -rf /", 9, task.StatusCanceled
	apply(t, s, Write{Task: &changed, Kind: Update})
	got := mustGet(t, s, "t1")
	if got.Cmd != tk.Cmd || got.Priority != tk.Priority || got.Status != task.StatusCanceled {
		t.Errorf("after Update: cmd %q, priority %d, status %s; want %q, %d, canceled", got.Cmd, got.Priority, got.Status, tk.Cmd, tk.Priority)
	}
}

// An Update of rows that are not stored (retention deleted them after the
// caller read the task) lands them whole, as an upsert would.
func TestUpdateOfMissingRowUpserts(t *testing.T) {
	s, _ := open(t)
	tk := newTask("gone", at(0), task.StatusSucceeded)
	tk.IdempotencyKey, tk.Priority, tk.Requires, tk.Backoff = "k", 7, map[string]string{"os": "linux"}, time.Second
	tk.Attempts, tk.WorkerID, tk.ExitCode, tk.FinishedAt = 1, "w1", intp(0), at(2)
	a := task.Attempt{TaskID: "gone", N: 1, WorkerID: "w1", Outcome: task.OutcomeSucceeded, ExitCode: intp(0), AssignedAt: at(1), FinishedAt: at(2)}
	apply(t, s, Write{Task: tk, Kind: Update, Attempt: &a, AttemptKind: Update})
	want := *tk
	want.History = []task.Attempt{a}
	if got := mustGet(t, s, "gone"); !reflect.DeepEqual(got, utc(want)) {
		t.Errorf("Get:\n got %+v\nwant %+v", got, utc(want))
	}

	// And an attempt-only Update of a missing attempt row.
	a2 := task.Attempt{TaskID: "gone", N: 2, WorkerID: "w2", Outcome: task.OutcomeLost, AssignedAt: at(3), FinishedAt: at(4)}
	apply(t, s, Write{Attempt: &a2, AttemptKind: Update})
	if got := mustGet(t, s, "gone"); len(got.History) != 2 || got.History[1].WorkerID != "w2" || !got.History[1].AssignedAt.Equal(at(3)) {
		t.Errorf("History = %+v; want attempt 2 whole", got.History)
	}
}

// An Insert of a second task with a key taken is a conflict, as an upsert's
// is, and fails only its own call.
func TestInsertConflict(t *testing.T) {
	s, _ := open(t)
	first := newTask("a", at(0), task.StatusQueued)
	first.IdempotencyKey = "k"
	apply(t, s, Write{Task: first, Kind: Insert})

	clash := newTask("b", at(1), task.StatusQueued)
	clash.IdempotencyKey = "k"
	chs := queueTogether(s,
		[]Write{{Task: newTask("c", at(2), task.StatusQueued), Kind: Insert}},
		[]Write{{Task: clash, Kind: Insert}},
		[]Write{{Task: newTask("d", at(3), task.StatusQueued), Kind: Insert}},
	)
	for i, want := range []error{nil, task.ErrConflict, nil} {
		err := <-chs[i]
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("Apply %d: err = %v, want %v", i, err, want)
		}
	}
	if _, err := s.Get(t.Context(), "b"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("Get(b) err = %v, want ErrNotFound", err)
	}
	for _, id := range []string{"a", "c", "d"} {
		mustGet(t, s, id)
	}
}

// A batch of calls of every kind, each depending on the one before, commits
// in one transaction and in order.
func TestBatchMixesKinds(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t1", at(0), task.StatusQueued)
	running := *tk
	running.Status, running.Attempts, running.WorkerID, running.AssignedAt = task.StatusRunning, 1, "w1", at(1)
	a1 := task.Attempt{TaskID: "t1", N: 1, WorkerID: "w1", Outcome: task.OutcomeRunning, AssignedAt: at(1)}
	requeued := running
	requeued.Status, requeued.WorkerID = task.StatusQueued, ""
	lost := a1
	lost.Outcome, lost.Error, lost.FinishedAt = task.OutcomeLost, "worker left", at(2)
	again := requeued
	again.Status, again.Attempts, again.WorkerID, again.AssignedAt = task.StatusRunning, 2, "w2", at(3)
	a2 := task.Attempt{TaskID: "t1", N: 2, WorkerID: "w2", Outcome: task.OutcomeRunning, AssignedAt: at(3)}
	done := again
	done.Status, done.ExitCode, done.FinishedAt = task.StatusSucceeded, intp(0), at(4)
	a2done := a2
	a2done.Outcome, a2done.ExitCode, a2done.FinishedAt = task.OutcomeSucceeded, intp(0), at(4)

	before := s.commits.Load()
	chs := queueTogether(s,
		[]Write{{Task: tk, Kind: Insert}},
		[]Write{{Task: &running, Kind: Update, Attempt: &a1, AttemptKind: Insert}},
		[]Write{{Task: &requeued, Kind: Update, Attempt: &lost, AttemptKind: Update}},
		[]Write{{Task: &again, Kind: Update, Attempt: &a2, AttemptKind: Insert}},
		[]Write{{Task: newTask("t2", at(5), task.StatusQueued)}}, // Upsert, the zero Kind
		[]Write{{Task: &done, Kind: Update, Attempt: &a2done, AttemptKind: Update}},
	)
	for i, ch := range chs {
		if err := <-ch; err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	if got := s.commits.Load() - before; got != 1 {
		t.Errorf("%d commits; want 1", got)
	}
	want := done
	want.History = []task.Attempt{lost, a2done}
	if got := mustGet(t, s, "t1"); !reflect.DeepEqual(got, utc(want)) {
		t.Errorf("Get:\n got %+v\nwant %+v", got, utc(want))
	}
	mustGet(t, s, "t2")
}

// Apply copies the kinds with the rows.
func TestApplyCopiesKinds(t *testing.T) {
	ws := copyWrites([]Write{{Task: newTask("t", at(0), task.StatusQueued), Kind: Update, AttemptKind: Insert}})
	if ws[0].Kind != Update || ws[0].AttemptKind != Insert {
		t.Errorf("copied kinds %d, %d; want Update, Insert", ws[0].Kind, ws[0].AttemptKind)
	}
}

// A worker's tasks are read through tasks_worker, which since migration 4
// holds only tasks with a worker, already in order.
func TestListByWorkerUsesIndex(t *testing.T) {
	s, _ := open(t)
	for _, q := range []Query{{WorkerID: "w1"}, {WorkerID: "w1", Cursor: encodeCursor("t5")}} {
		query, args, err := listQuery(q, 10)
		if err != nil {
			t.Fatal(err)
		}
		if p := queryPlan(t, s, query, args...); !strings.Contains(p, "tasks_worker") || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%+v: plan %q; want a search of tasks_worker with no sort", q, p)
		}
	}
}

// Tasks without a worker stay out of tasks_worker; a worker's tasks are
// all found, whatever the index holds.
func TestListByWorkerPartialIndex(t *testing.T) {
	s, _ := open(t)
	queued := newTask("t1", at(0), task.StatusQueued)
	ran := newTask("t2", at(1), task.StatusSucceeded)
	ran.WorkerID = "w1"
	apply(t, s, Write{Task: queued, Kind: Insert}, Write{Task: ran, Kind: Insert})
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM tasks INDEXED BY tasks_worker WHERE worker_id != ''`).Scan(&n); err != nil || n != 1 {
		t.Errorf("tasks_worker holds %d rows (%v); want 1", n, err)
	}
	p, err := s.List(t.Context(), Query{WorkerID: "w1"})
	if err != nil || len(p.Tasks) != 1 || p.Tasks[0].ID != "t2" {
		t.Errorf("List(w1) = %v, %v; want t2", ids(p.Tasks), err)
	}
}

// No write opens an ephemeral table: SQLite codes an IN list of more than
// two values, in a partial index's WHERE, as a table built anew on every
// write of a row (migration 5 took them out).
func TestWritesOpenNoEphemeralTable(t *testing.T) {
	s, _ := open(t)
	for _, q := range []string{taskInsertSQL, taskSubmitSQL, taskUpsertSQL, taskUpdateSQL, taskFinishSQL, attemptUpsertSQL, attemptUpdateSQL} {
		ops := map[string]int{}
		for _, in := range explain(t, s, q) {
			ops[in.op]++
		}
		if ops["Insert"]+ops["IdxInsert"] == 0 {
			t.Fatalf("%s: no Insert or IdxInsert in %v; is this EXPLAIN's output?", q, ops)
		}
		if n := ops["OpenEphemeral"]; n > 0 {
			t.Errorf("%s: %d OpenEphemeral; want none", q, n)
		}
	}
}

// A task's final write leaves its tasks_worker entry alone: taskFinishSQL
// opens that index for no write, where taskUpdateSQL deletes and inserts
// the entry again.
func TestFinishLeavesWorkerIndexAlone(t *testing.T) {
	s, _ := open(t)
	var root int
	if err := s.db.QueryRow(`SELECT rootpage FROM sqlite_schema WHERE name = 'tasks_worker'`).Scan(&root); err != nil {
		t.Fatal(err)
	}
	opens := func(q string) int {
		n := 0
		for _, in := range explain(t, s, q) {
			if in.op == "OpenWrite" && in.p2 == root {
				n++
			}
		}
		return n
	}
	if opens(taskUpdateSQL) == 0 {
		t.Fatalf("taskUpdateSQL opens no tasks_worker (root page %d) for writing; is the test looking at the right index?", root)
	}
	if n := opens(taskFinishSQL); n > 0 {
		t.Errorf("taskFinishSQL opens tasks_worker for writing %d times; want 0", n)
	}
}

// A final write whose delivery columns are as stored takes the narrow
// statement, and the row reads back as written.
func TestFinishWritesTheResult(t *testing.T) {
	s, _ := open(t)
	tk := newTask("t1", at(0), task.StatusQueued)
	apply(t, s, Write{Task: tk, Kind: Insert})
	running := *tk
	running.Status, running.Attempts, running.WorkerID, running.AssignedAt, running.StartedAt = task.StatusRunning, 1, "w1", at(1), at(1)
	apply(t, s, Write{Task: &running, Kind: Update})
	done := running
	done.Status, done.ExitCode, done.FinishedAt, done.StartedAt = task.StatusSucceeded, intp(0), at(3), at(2)
	done.Stdout, done.Stderr, done.StdoutCut, done.StderrCut, done.Error = "out", "err", true, false, ""
	apply(t, s, Write{Task: &done, Kind: Update})
	if got := mustGet(t, s, "t1"); !reflect.DeepEqual(got, utc(done)) {
		t.Fatalf("after the result:\n got %+v\nwant %+v", got, utc(done))
	}
	if page, err := s.List(context.Background(), Query{WorkerID: "w1"}); err != nil || len(page.Tasks) != 1 {
		t.Fatalf("List by worker w1: %+v, %v; want the task", page, err)
	}
}

// instruction is one line of EXPLAIN's program.
type instruction struct {
	op     string
	p1, p2 int
}

// explain returns the program SQLite compiles q into.
func explain(t *testing.T, s *Store, q string) []instruction {
	t.Helper()
	rows, err := s.db.Query("EXPLAIN "+q, make([]any, strings.Count(q, "?"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var prog []instruction
	for rows.Next() {
		var addr, p1, p2, p3, p5 int
		var op string
		var p4, comment any
		if err := rows.Scan(&addr, &op, &p1, &p2, &p3, &p4, &p5, &comment); err != nil {
			t.Fatal(err)
		}
		prog = append(prog, instruction{op: op, p1: p1, p2: p2})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return prog
}

// A submission written by taskSubmitSQL is stored exactly as taskInsertSQL
// stores it: every column the same value of the same type.
func TestSubmitStoresAsInsert(t *testing.T) {
	s, _ := open(t)
	for _, key := range []string{"", "k"} {
		tk := newTask("submitted"+key, at(0), task.StatusQueued)
		tk.IdempotencyKey, tk.Priority = key, 2
		if !submitted(tk) {
			t.Fatalf("%+v is not a plain submission", tk)
		}
		apply(t, s, Write{Task: tk, Kind: Insert})
		full := *tk
		full.ID = "inserted" + key
		if key != "" {
			full.IdempotencyKey = "other"
		}
		if _, err := s.stmts.taskInsert.Exec(taskArgs(&full)...); err != nil {
			t.Fatal(err)
		}
		got, want := storedRow(t, s, tk.ID), storedRow(t, s, full.ID)
		for col := range want {
			if col != "id" && col != "idempotency_key" && got[col] != want[col] {
				t.Errorf("key %q: column %s is %s through taskSubmitSQL, %s through taskInsertSQL", key, col, got[col], want[col])
			}
		}
		if wantKey := map[string]string{"": "NULL", "k": "'k'"}[key]; got["idempotency_key"] != wantKey {
			t.Errorf("idempotency_key = %s, want %s", got["idempotency_key"], wantKey)
		}
	}
}

// storedRow returns every column of task id as SQLite's quote() writes it,
// which shows the type: 0 and '0' and NULL differ.
func storedRow(t *testing.T, s *Store, id string) map[string]string {
	t.Helper()
	cols := strings.Split(strings.Join(strings.Fields(taskColumns), ""), ",")
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = "quote(" + c + ")"
	}
	vals := make([]string, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := s.db.QueryRow("SELECT "+strings.Join(quoted, ", ")+" FROM tasks WHERE id = ?", id).Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	row := make(map[string]string, len(cols))
	for i, c := range cols {
		row[c] = vals[i]
	}
	return row
}

// submitted looks at every stored field that taskSubmitSQL does not bind:
// a field added to Task and to the table must be added to it too, or a
// task carrying it would lose it on insert.
func TestSubmittedSeesEveryField(t *testing.T) {
	bound := map[string]bool{ // bound by taskSubmitSQL, or never stored
		"ID": true, "Cmd": true, "Status": true, "MaxAttempts": true, "Timeout": true,
		"IdempotencyKey": true, "CreatedAt": true, "Priority": true,
		"WaitingFor": true, "History": true,
		"RetriedAt": true, // the dispatcher's, in memory only
	}
	typ := reflect.TypeFor[task.Task]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if bound[f.Name] {
			continue
		}
		tk := newTask("t", at(0), task.StatusQueued)
		v := reflect.ValueOf(tk).Elem().Field(i)
		switch x := v.Addr().Interface().(type) {
		case *string:
			*x = "x"
		case *int:
			*x = 1
		case *bool:
			*x = true
		case *time.Time:
			*x = at(1)
		case *time.Duration:
			*x = time.Second
		case **int:
			*x = intp(0)
		case *map[string]string:
			*x = map[string]string{"gpu": "1"}
		case *[]task.Outcome:
			*x = []task.Outcome{task.OutcomeFailed}
		case **task.Request:
			*x = &task.Request{RunAt: at(1)} // the defaults are bound
		default:
			t.Fatalf("field %s of type %s: teach this test to set it", f.Name, f.Type)
		}
		if submitted(tk) {
			t.Errorf("submitted ignores %s: a task with it set would be inserted without it", f.Name)
		}
	}
}
