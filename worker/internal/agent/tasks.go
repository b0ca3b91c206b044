package agent

// Running what the master sends: each task in a goroutine of its own, its
// cancel, and the record of what runs and is held for the master.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"github.com/roundhouse-lab/roundhouse/worker/internal/runner"
)

// start runs t in a goroutine and queues its result for the reporter. The
// run has a context of its own, so that a Cancel can kill it alone.
func (a *Agent) start(ctx context.Context, t *pb.Task) {
	id := t.GetId()
	// The task's attributes go in each of its lines rather than in a
	// logger of its own (log.With), which would cost every task a handler.
	log, attempt := a.log, t.GetAttempt()
	taskCtx, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	// A task that arrives while draining was sent before the master took
	// note of the drain: it runs, and the drain waits for it. Left unrun, it
	// would come back to the master as a lost attempt.
	stop, dup := a.running[id]
	if dup && stop == nil && t.GetAttempt() > a.attempts[id] {
		// A newer delivery of a task whose last run is over and only waits
		// for the master's ack (the master gave that delivery up, and has
		// the kill's report): it runs. Refused, it would sit on the
		// master's books as running until its deadline.
		dup = false
	}
	if !dup {
		a.running[id] = cancel
		a.attempts[id] = t.GetAttempt()
	}
	if a.draining.Err() != nil {
		a.seen[id] = max(a.seen[id], attempt)
		if n, ok := a.awaited[id]; ok && n <= attempt {
			delete(a.awaited, id)
		}
	}
	a.mu.Unlock()
	if dup {
		// Running it twice at once could only do harm; the run in progress
		// reports to the master either way.
		log.Warn("task is already running here; ignoring the second delivery", "task_id", id, "attempt", attempt)
		cancel(nil)
		return
	}
	timeout := t.GetTimeout().AsDuration()
	log.Info("task received", "task_id", id, "attempt", attempt, "cmd", t.GetCmd(), "timeout", timeout)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel(nil)
		live := a.out.start(id, t.GetAttempt())
		res := runner.Run(taskCtx, t.GetCmd(), runner.Options{Timeout: timeout, MaxOutput: a.cfg.MaxOutput, Env: a.cfg.TaskEnv, Live: live})
		// The rest of the live output goes before the result is queued, so
		// that it usually reaches the master while the delivery is current.
		liveDropped := a.out.end(live)
		if ctx.Err() != nil {
			log.Info("task stopped by shutdown; not reported", "task_id", id, "attempt", attempt)
			a.killed.Add(1)
			a.forget(id)
			return
		}
		a.ran(id)
		// A run the master canceled that did not exit by itself (it may
		// have, in the same instant) is reported as canceled.
		canceled := errors.Is(context.Cause(taskCtx), errCanceledByMaster) && res.ExitCode == -1 && !res.TimedOut
		if canceled {
			res.Err = errCanceledByMaster.Error()
		}
		a.cfg.Observer.TaskDone(outcome(res.ExitCode, res.Err, res.TimedOut, canceled), res.FinishedAt.Sub(res.StartedAt))
		// Sizes only: the output goes to the master, which keeps it behind
		// its API token; copying it into the container log would hand it
		// to anyone who can read logs, megabytes at a time.
		log.Info("task finished", "task_id", id, "attempt", attempt, "exit_code", res.ExitCode, "error", res.Err,
			"timed_out", res.TimedOut, "canceled", canceled,
			"duration", res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond),
			"stdout_bytes", len(res.Stdout), "stderr_bytes", len(res.Stderr),
			"stdout_truncated", res.StdoutTruncated, "stderr_truncated", res.StderrTruncated,
			"live_dropped_bytes", liveDropped)
		a.enqueue(&pb.TaskResult{
			TaskId:          id,
			WorkerId:        a.cfg.WorkerID,
			InstanceId:      a.instanceID,
			Attempt:         t.GetAttempt(),
			ExitCode:        int32(res.ExitCode),
			Stdout:          res.Stdout,
			Stderr:          res.Stderr,
			StdoutTruncated: res.StdoutTruncated,
			StderrTruncated: res.StderrTruncated,
			StartedAt:       timestamppb.New(res.StartedAt),
			FinishedAt:      timestamppb.New(res.FinishedAt),
			Error:           res.Err,
			TimedOut:        res.TimedOut,
			Canceled:        canceled,
		})
	}()
}

// cancel kills the run of task id, if it is running here.
func (a *Agent) cancel(id string) {
	log := a.log.With("task_id", id)
	a.mu.Lock()
	stop, ok := a.running[id]
	a.mu.Unlock()
	switch {
	case !ok:
		log.Info("cancel for a task not running here; ignoring it")
	case stop == nil:
		log.Info("cancel for a task that has already finished; its result stands")
	default:
		log.Info("canceling task at the master's request")
		stop(errCanceledByMaster)
	}
}

// ran records that the run of task id is over; its slot stays taken until
// the master acknowledges the result.
func (a *Agent) ran(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.running[id]; ok {
		a.running[id] = nil
	}
}

// runningIDs lists the tasks the master must keep counting against our slots.
func (a *Agent) runningIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// holding lists the deliveries the master must keep counting against our
// slots: the runs going on here and the results it has not acknowledged.
func (a *Agent) holding() []*pb.RunningTask {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdingLocked()
}

// holdingLocked is holding for a caller that holds mu.
func (a *Agent) holdingLocked() []*pb.RunningTask {
	out := make([]*pb.RunningTask, 0, len(a.running))
	for id := range a.running {
		out = append(out, &pb.RunningTask{TaskId: id, Attempt: a.attempts[id]})
	}
	slices.SortFunc(out, func(x, y *pb.RunningTask) int { return strings.Compare(x.TaskId, y.TaskId) })
	return out
}

// forget drops a task the master will not hear about from us.
func (a *Agent) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.running, id)
	delete(a.attempts, id)
	a.noteDrained()
}
