package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// benchDispatcher returns a recovered dispatcher on a fresh database.
func benchDispatcher(b *testing.B) *Dispatcher {
	b.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(filepath.Join(b.TempDir(), "rh.db"), log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	d := New(Params{
		Log: log, Store: st, Now: time.Now,
		NewID:       func() string { return uuid.Must(uuid.NewV7()).String() }, // as the master makes them
		MaxCmdBytes: 1024, DefaultTimeout: time.Hour, MaxTimeout: 24 * time.Hour, MaxAttempts: 3, WorkerTimeout: 10 * time.Second,
	})
	if err := d.Recover(ctx); err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkAssign measures the assign step: one queued task handed to a
// worker with a free slot, its running state queued for the store. A
// worker with b.N slots registers in front of b.N queued tasks, so the
// timed call is b.N assignments under the dispatcher's lock.
func BenchmarkAssign(b *testing.B) {
	d := benchDispatcher(b)
	// Queued as Submit leaves them, without waiting b.N times for the disk.
	// Stored too, as Submit leaves them, so that the running writes
	// the writer makes meanwhile find their rows.
	now := time.Now()
	ws := make([]store.Write, b.N)
	for i := range b.N {
		id := benchID(i)
		qt := &task.Task{ID: id, Cmd: "true", Status: task.StatusQueued, MaxAttempts: 3, Timeout: time.Hour, CreatedAt: now}
		ws[i] = store.Write{Task: qt}
		d.queue.push(qt, d.tasks.key(qt.ID), false)
		d.tasks.put(qt)
	}
	if err := <-d.p.Store.Apply(ws...); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	s, _, err := d.Register(context.Background(), Registration{WorkerID: "w1", InstanceID: "i1", Slots: b.N})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if got := len(s.Take()); got != b.N {
		b.Fatalf("assigned %d of %d", got, b.N)
	}
}

// BenchmarkSubmit is a durable submission from 16 callers at once, as the
// HTTP handlers make them: validate, store (group commit), queue.
func BenchmarkSubmit(b *testing.B) {
	d := benchDispatcher(b)
	b.SetParallelism(8) // 8 x GOMAXPROCS callers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := d.Submit(ctx, Submission{Cmd: "true"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIdleTask is one task on an idle cluster, start to end, as the
// idle figure of make bench runs it: submitted while its worker is free,
// sent once its delivery is on disk, its result reported and committed.
// It reports the commits (each an fsync) a task costs.
func BenchmarkIdleTask(b *testing.B) {
	d := benchDispatcher(b)
	s, _, err := d.Register(ctx, Registration{WorkerID: "w", InstanceID: "w-1", Slots: 1})
	if err != nil {
		b.Fatal(err)
	}
	before := d.p.Store.Counts()
	for b.Loop() {
		tk, _, err := d.Submit(ctx, Submission{Cmd: "true"})
		if err != nil {
			b.Fatal(err)
		}
		msgs := s.Take()
		if len(msgs) != 1 || msgs[0].Task == nil || msgs[0].Task.ID != tk.ID {
			b.Fatalf("the worker got %+v, want %s", msgs, tk.ID)
		}
		if err := msgs[0].Ready(ctx, s.Done()); err != nil {
			b.Fatal(err)
		}
		r := task.Result{TaskID: tk.ID, WorkerID: "w", InstanceID: "w-1", Attempt: msgs[0].Task.Attempt}
		if _, err := d.Report(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(d.p.Store.Counts().Commits-before.Commits)/float64(b.N), "commits/op")
}

// BenchmarkQueuedMemory reports the heap a queued task costs the
// dispatcher (its entry in the live tasks and in the queue), as Submit
// leaves it: the figure behind the master's RSS with a million queued.
func BenchmarkQueuedMemory(b *testing.B) {
	const n = 1_000_000 // the target's backlog: map growth depends on the size
	now := time.Now()
	var before, after runtime.MemStats
	for b.Loop() {
		d := New(Params{Log: slog.New(slog.DiscardHandler)})
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			t := &task.Task{ID: benchID(i), Cmd: "true", Status: task.StatusQueued,
				MaxAttempts: 3, Timeout: time.Hour, CreatedAt: now}
			d.queue.push(t, d.tasks.key(t.ID), false)
			d.tasks.put(t)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/queued-task")
		runtime.KeepAlive(d)
	}
}

// BenchmarkSubmitQueueFull is a submission refused because the queue is
// full, with queues of growing length: the time per refusal (and the time
// the dispatcher's lock is held for it) must not grow with the queue.
func BenchmarkSubmitQueueFull(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			d := benchDispatcher(b)
			d.p.MaxQueued = n
			now := time.Now()
			d.mu.Lock()
			for i := range n { // queued as Submit leaves them
				id := benchID(i)
				qt := &task.Task{ID: id, Cmd: "true", Status: task.StatusQueued, MaxAttempts: 3, Timeout: time.Hour, CreatedAt: now}
				d.queue.push(qt, d.tasks.key(qt.ID), false)
				d.tasks.put(qt)
			}
			d.mu.Unlock()
			for b.Loop() {
				if _, _, err := d.Submit(ctx, Submission{Cmd: "true"}); !errors.Is(err, task.ErrFull) {
					b.Fatalf("submit to a full queue: %v, want ErrFull", err)
				}
			}
		})
	}
}

// BenchmarkAssignStep measures one assign step (a worker's slot frees, the
// most urgent task it can run is handed to it) with queues of growing
// length spread over 5 priorities and 100 requirement sets: 500 classes.
// The queue is kept at its length by queuing a task into the class just
// served. The time per step must not grow with the queue: the step walks
// classes, never tasks.
func BenchmarkAssignStep(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			d := benchDispatcher(b)
			now := time.Now()
			sets := make([]map[string]string, 100)
			for i := range sets {
				sets[i] = map[string]string{"zone": fmt.Sprint("z", i/10), "size": fmt.Sprint("s", i%10)}
			}
			seq := 0
			queue := func(prio int, set map[string]string) {
				seq++
				t := &task.Task{ID: benchID(seq), Cmd: "true", Status: task.StatusQueued, MaxAttempts: 3, Timeout: time.Hour,
					CreatedAt: now, Priority: prio, Requires: set}
				d.queue.push(t, d.tasks.key(t.ID), false)
				d.tasks.put(t)
			}
			d.mu.Lock()
			for i := range n {
				queue(1+i%5, sets[(i/5)%100])
			}
			d.mu.Unlock()
			// The worker serves the last set only: each step looks at every
			// class, and at the worker for those whose head is older.
			s, _, err := d.Register(ctx, Registration{WorkerID: "w", InstanceID: "i", Slots: 1, Labels: sets[99]})
			if err != nil {
				b.Fatal(err)
			}
			s.Take()
			d.mu.Lock()
			queue(1, sets[99]) // for the task it took
			d.mu.Unlock()
			// The collector is off while steps are timed: a cycle's cost
			// follows the heap the backlog holds, not the step, and would
			// land on whichever step it interrupts.
			runtime.GC()
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			for b.Loop() {
				d.mu.Lock()
				for id := range s.inflight { // it finishes: its slot frees, the task leaves memory
					d.tasks.del(id)
				}
				clear(s.inflight)
				d.assignLocked()
				for id := range s.inflight {
					t, _ := d.tasks.view(id)
					queue(t.Priority, sets[99])
				}
				d.mu.Unlock()
				s.Take()
			}
			if got := d.Stats().Queued; got != n {
				b.Fatalf("queue of %d after the steps, want %d", got, n)
			}
		})
	}
}

// benchID returns the i-th of a run of task IDs in the form the master
// makes (UUIDv7): the form the dispatcher keeps compact.
func benchID(i int) string { return fmt.Sprintf("019a0000-0000-7000-8000-%012d", i) }

// BenchmarkQueueRemove: a worker comes back holding a task its retry
// policy had queued again (queue.remove, under the dispatcher's lock), the
// task at the back of a class of 1,000,000 queued tasks.
func BenchmarkQueueRemove(b *testing.B) {
	const n = 1_000_000
	ids := newIDTable()
	t := &task.Task{Priority: task.DefaultPriority}
	var q queue
	for i := range n {
		q.push(t, ids.key(fmt.Sprint("q", i)), false)
	}
	k := ids.key(fmt.Sprint("q", n-1))
	for b.Loop() {
		q.remove(t, k)
		b.StopTimer()
		if q.len() != n-1 {
			b.Fatalf("queue of %d after remove, want %d", q.len(), n-1)
		}
		q.push(t, k, false) // queued again
		b.StartTimer()
	}
}
