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
	delete(a.running, r.GetTaskId())
	a.noteDrained()
}
