package dispatch

import (
	"reflect"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func submitted() *task.Task {
	return &task.Task{ID: "t1", Cmd: "echo hi", Status: task.StatusQueued, MaxAttempts: 3, Timeout: time.Minute,
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC), IdempotencyKey: "k1"}
}

func TestLiveTasksKeepsAFreshTaskCompactUntilChanged(t *testing.T) {
	l := newLiveTasks()
	want := *submitted()
	l.put(submitted())
	if l.queued.len() != 1 || len(l.full) != 0 {
		t.Fatalf("a submitted task: %d compact, %d full; want it compact", l.queued.len(), len(l.full))
	}
	if got, ok := l.view("t1"); !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("view = %+v, %v; want %+v", got, ok, want)
	}
	if l.queued.len() != 1 {
		t.Fatal("view made the task full")
	}
	got, ok := l.get("t1")
	if !ok || !reflect.DeepEqual(*got, want) {
		t.Fatalf("get = %+v, %v; want %+v", got, ok, want)
	}
	got.Status, got.WorkerID = task.StatusRunning, "w1"
	if again, _ := l.get("t1"); again != got {
		t.Fatal("get returned another task after the first made it full: changes would be lost")
	}
	if v, _ := l.view("t1"); v.Status != task.StatusRunning || v.WorkerID != "w1" {
		t.Fatalf("a change through get was lost: %+v", v)
	}
	if l.len() != 1 {
		t.Fatalf("len = %d, want 1", l.len())
	}
	l.del("t1")
	if _, ok := l.view("t1"); ok || l.len() != 0 {
		t.Fatal("del left the task")
	}
	if _, ok := l.get("t1"); ok {
		t.Fatal("get of a deleted task")
	}
}

// TestLiveTasksLosesNoField sets each field of task.Task in turn, so a
// field added to task.Task later cannot be silently dropped by the compact
// form: either the task stays full or the field survives.
func TestLiveTasksLosesNoField(t *testing.T) {
	typ := reflect.TypeOf(task.Task{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			tk := submitted()
			v := reflect.ValueOf(tk).Elem().Field(i)
			setNonZero(t, v)
			want := *tk
			l := newLiveTasks()
			l.put(tk)
			if got, _ := l.view(want.ID); !reflect.DeepEqual(got, want) {
				t.Errorf("after put with %s set: view = %+v, want %+v", f.Name, got, want)
			}
		})
	}
}

// setNonZero gives v a value other than its zero and other than what
// submitted() set.
func setNonZero(t *testing.T, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 7)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		m.SetMapIndex(reflect.ValueOf("k").Convert(v.Type().Key()), reflect.ValueOf("v").Convert(v.Type().Elem()))
		v.Set(m)
	case reflect.Struct:
		if v.Type() != reflect.TypeOf(time.Time{}) {
			t.Fatalf("no rule for struct field of type %s", v.Type())
		}
		v.Set(reflect.ValueOf(time.Date(2027, 2, 3, 4, 5, 6, 7, time.UTC)))
	default:
		t.Fatalf("no rule for kind %s", v.Kind())
	}
}

// Tasks submitted alike share one shape; a task that differs in anything
// a shape holds gets its own, and every task reads back as it was put.
func TestLiveTasksShareShapes(t *testing.T) {
	l := newLiveTasks()
	base := task.Task{Cmd: "true", Status: task.StatusQueued, MaxAttempts: 3, Timeout: time.Minute, Priority: 3,
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 5, time.UTC)}
	mk := func(id string, change func(*task.Task)) task.Task {
		tk := base
		tk.ID = id
		tk.CreatedAt = tk.CreatedAt.Add(time.Duration(l.queued.len()))
		if change != nil {
			change(&tk)
		}
		c := tk
		l.put(&c)
		return tk
	}
	want := []task.Task{
		mk("019a0000-0000-7000-8000-000000000001", nil),
		mk("019a0000-0000-7000-8000-000000000002", nil),
		mk("t3", func(tk *task.Task) { tk.Cmd = "false" }),
		mk("t4", func(tk *task.Task) { tk.Timeout = time.Hour }),
		mk("t5", func(tk *task.Task) { tk.Status = task.StatusScheduled; tk.RunAt = tk.CreatedAt.Add(time.Hour) }),
		mk("t6", func(tk *task.Task) { tk.Priority = 1 }),
		mk("t7", func(tk *task.Task) { tk.MaxAttempts = 1 }),
	}
	shapes := map[*queuedShape]bool{}
	for _, w := range want {
		got, ok := l.view(w.ID)
		if !ok || !reflect.DeepEqual(got, w) {
			t.Fatalf("view(%s) = %+v, %v; want %+v", w.ID, got, ok, w)
		}
		shapes[must(l.queued.get(l.key(w.ID))).shape] = true
	}
	if l.queued.len() != len(want) || len(shapes) != len(want)-1 {
		t.Fatalf("%d compact tasks with %d shapes, want %d with %d", l.queued.len(), len(shapes), len(want), len(want)-1)
	}
}

func must(q queuedTask, ok bool) queuedTask {
	if !ok {
		panic("no such compact task")
	}
	return q
}
