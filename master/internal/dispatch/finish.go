package dispatch

import (
	"slices"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// finishLocked makes t final and wakes whoever waits for it. A task that
// was queued or scheduled leaves the queue or its timer here, so no caller
// can forget to count it out.
func (d *Dispatcher) finishLocked(t *task.Task, st task.Status, at time.Time) {
	was := t.Status
	t.Status = st
	t.FinishedAt = at
	switch was { // after the status changed, as they ask
	case task.StatusQueued:
		d.leftQueueLocked(t)
	case task.StatusScheduled:
		d.leftScheduleLocked()
	}
	for _, ch := range d.waiters[t.ID] {
		close(ch)
	}
	delete(d.waiters, t.ID)
}

// persistLocked queues the change of t (and of its stored attempt a, if
// any) for the store. A task in memory is stored already: its submission
// committed before it was put there, or it was read from the store. So
// only what changes after submission is written (store.Update).
func (d *Dispatcher) persistLocked(t *task.Task, a *task.Attempt) <-chan error {
	return d.writeLocked(store.Update, t, a, store.Update)
}

// restoreLocked queues t with every attempt of its history, in one
// transaction: the row as persistLocked writes it (upserted whole if it
// is gone) and each attempt that is gone, for a task read off disk that
// may have been deleted since. An attempt still stored is left alone: it
// may have been reported, or ended, since the read.
func (d *Dispatcher) restoreLocked(t *task.Task) <-chan error {
	ws := []store.Write{{Task: rowOf(t), Kind: store.Update}}
	for i := range t.History {
		ws = append(ws, store.Write{Attempt: copyAttempt(&t.History[i]), AttemptKind: store.IfAbsent})
	}
	return d.p.Store.Apply(ws...)
}

// writeLocked queues t, written as k, and attempt a, if any, written as ak.
// Snapshots are passed, since the store writes them later. Writes leave in
// the order they are made, so the store always converges on the memory's
// state.
func (d *Dispatcher) writeLocked(k store.Kind, t *task.Task, a *task.Attempt, ak store.Kind) <-chan error {
	w := store.Write{Task: rowOf(t), Kind: k}
	if a != nil {
		w.Attempt, w.AttemptKind = copyAttempt(a), ak
	}
	return d.p.Store.Apply(w)
}

// rowOf is a snapshot of t's row, without its history (attempts are
// written one by one): the store writes it later, and t changes on.
func rowOf(t *task.Task) *task.Task {
	snap := copyTask(t)
	snap.History = nil
	return &snap
}

// settle is called by whoever waited for the commit of a task's final
// state: once that is on disk, the task leaves memory, and the store
// answers for it from then on.
func (d *Dispatcher) settle(t *task.Task, err error) error {
	if err != nil {
		d.log.Error("storing a final task failed; keeping it in memory", "task_id", t.ID, "err", err)
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgetLocked(t)
	return nil
}

// forgetLocked drops t, whose final state is on disk, from memory: only if
// memory still holds that very task, final. A retry by hand of a final
// task still in memory puts a copy there (Retry), which may be final again
// by the time the write that made t final lands: it leaves memory with its
// own final write, not with t's, which lacks its runs since. Until then
// the store may not have them, and what reads it off memory (Get, a
// report) would see the retry as it was before that.
func (d *Dispatcher) forgetLocked(t *task.Task) {
	cur, ok := d.tasks.get(t.ID)
	if !ok || cur != t || !t.Status.Final() {
		return
	}
	d.tasks.del(t.ID)
	if t.IdempotencyKey != "" { // byKey asks the store from now on
		delete(d.keys, t.IdempotencyKey)
	}
}

// evictLocked drops from memory the final tasks whose final write is on
// disk. A failed write keeps the task in memory, so it stays readable.
func (d *Dispatcher) evictLocked() {
	keep := d.evicting[:0]
	for _, e := range d.evicting {
		select {
		case err := <-e.committed:
			if err != nil {
				d.log.Error("storing a final task failed; keeping it in memory", "task_id", e.t.ID, "err", err)
				continue
			}
			d.forgetLocked(e.t)
		default:
			keep = append(keep, e)
		}
	}
	clear(d.evicting[len(keep):])
	d.evicting = keep
}

func (d *Dispatcher) loseAttemptLocked(t *task.Task, why string) {
	if a := lastAttempt(t); a != nil && a.Outcome == task.OutcomeRunning {
		a.Outcome, a.Error, a.FinishedAt = task.OutcomeLost, why, d.p.Now()
	}
}

// endUnseenLocked records that the run of delivery attempt of task id on
// workerID ended unseen: the master holds its slot no longer (the kill it
// sent went unanswered for a grace, the worker's connection ended, or the
// worker was away when it was to be killed) and no report came. Only a
// delivery that is not the task's current one and is still running in
// its history is recorded so, as lost; a current one is taken back
// instead (takeBackLocked). A report that comes after all still records
// how the run ended (reported): lost with no exit code is no result.
func (d *Dispatcher) endUnseenLocked(id, workerID string, attempt int, why string) {
	if w, ok := d.unseenEndLocked(id, workerID, attempt, why); ok {
		d.p.Store.Apply(w)
	}
}

// unseenEndLocked is endUnseenLocked without the write, which it returns
// (false: nothing to write), for a caller that writes it with the task's
// own change, in one transaction.
func (d *Dispatcher) unseenEndLocked(id, workerID string, attempt int, why string) (store.Write, bool) {
	if attempt == 0 {
		return store.Write{}, false // listed by a worker without its number: which delivery is not known
	}
	ended := task.Attempt{TaskID: id, N: attempt, WorkerID: workerID, Outcome: task.OutcomeLost, Error: why, FinishedAt: d.p.Now()}
	if t, ok := d.tasks.get(id); ok {
		if isCurrent(t, workerID, attempt) {
			return store.Write{}, false
		}
		i := slices.IndexFunc(t.History, func(a task.Attempt) bool { return a.N == attempt && a.WorkerID == workerID })
		if i < 0 || t.History[i].Outcome != task.OutcomeRunning {
			return store.Write{}, false
		}
		a := &t.History[i]
		a.Outcome, a.Error, a.FinishedAt = ended.Outcome, ended.Error, ended.FinishedAt
	} else {
		d.diskOnly++
	}
	// IfRunning: a task off memory is final and on disk, where this
	// delivery may have its result already, or be gone with its task.
	return store.Write{Attempt: &ended, AttemptKind: store.IfRunning}, true
}

func lastAttempt(t *task.Task) *task.Attempt {
	if len(t.History) == 0 {
		return nil
	}
	return &t.History[len(t.History)-1]
}

func copyTask(t *task.Task) task.Task {
	c := *t
	c.History = slices.Clone(t.History)
	return c
}

func copyAttempt(a *task.Attempt) *task.Attempt {
	c := *a
	return &c
}
