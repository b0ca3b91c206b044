package agent

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// reportTimeout bounds one ReportStatus call, so a master that hangs is
// retried like one that fails.
const reportTimeout = 30 * time.Second

// enqueue hands a result to the reporter.
func (a *Agent) enqueue(r *pb.TaskResult) {
	a.mu.Lock()
	a.results = append(a.results, r)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// report sends queued results to the master in order, until ctx is done.
// Each is retried until the master acknowledges it, across reconnects, so
// a result is lost only when the worker stops.
func (a *Agent) report(ctx context.Context, client pb.NodeServiceClient) {
	bo := backoff{max: a.cfg.ReconnectMax}
	for {
		r := a.oldestResult()
		if r == nil {
			select {
			case <-ctx.Done():
				return
			case <-a.wake:
				continue
			}
		}
		log := a.log.With("task_id", r.GetTaskId(), "attempt", r.GetAttempt())
		callCtx, cancel := context.WithTimeout(ctx, reportTimeout)
		ack, err := client.ReportStatus(callCtx, r)
		cancel()
		switch status.Code(err) {
		case codes.OK:
			log.Info("result reported", "duplicate", ack.GetDuplicate())
			a.acknowledged(r)
			bo.reset()
		case codes.ResourceExhausted:
			if len(r.GetStdout())+len(r.GetStderr()) == 0 {
				log.Warn("master rejected the result as too large even without output; dropping it", "err", err)
				a.acknowledged(r)
				continue
			}
			// The master accepts smaller messages than this worker's
			// WORKER_MAX_OUTPUT_BYTES allows (MASTER_GRPC_MAX_RECV_BYTES):
			// the exit status still matters, so it goes without the output.
			log.Warn("result too large for the master; reporting it without its output", "err", err,
				"stdout_bytes", len(r.GetStdout()), "stderr_bytes", len(r.GetStderr()))
			a.shrink(r)
		case codes.NotFound, codes.InvalidArgument:
			// The master does not know the task: retrying cannot help.
			log.Warn("master rejected the result; dropping it", "err", err)
			a.acknowledged(r)
		default:
			if ctx.Err() != nil {
				return
			}
			d := bo.next()
			log.Warn("reporting result failed", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return
			}
		}
	}
}

func (a *Agent) oldestResult() *pb.TaskResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.results) == 0 {
		return nil
	}
	return a.results[0]
}

// acknowledged removes r, the oldest result, and frees its task's slot.
func (a *Agent) acknowledged(r *pb.TaskResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.results = a.results[1:]
	// A newer delivery of the same task may run here by now: it keeps its slot.
	if id := r.GetTaskId(); a.attempts[id] == r.GetAttempt() {
		delete(a.running, id)
		delete(a.attempts, id)
	}
	a.noteDrained()
}

// shrink drops the output of r, the oldest result, in place, and says so in
// its error.
func (a *Agent) shrink(r *pb.TaskResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r.StdoutTruncated = r.StdoutTruncated || len(r.Stdout) > 0
	r.StderrTruncated = r.StderrTruncated || len(r.Stderr) > 0
	r.Stdout, r.Stderr = nil, nil
	note := "output dropped: larger than the master accepts (MASTER_GRPC_MAX_RECV_BYTES)"
	if r.Error != "" {
		note = r.Error + "; " + note
	}
	r.Error = note
}
