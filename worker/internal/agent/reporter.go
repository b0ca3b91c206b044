package agent

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

const (
	// reportTimeout bounds one ReportStatus call, and the wait for any ack
	// on the Report stream while results are in flight, so that a master
	// that hangs is retried like one that fails.
	reportTimeout = 30 * time.Second
	// maxReportsInFlight bounds the results sent on the Report stream and
	// not acknowledged yet: enough to fill the master's group commits,
	// few enough that a broken stream costs little to resend.
	maxReportsInFlight = 64
)

// errNoAck ends a Report stream on which no ack came for reportTimeout.
var errNoAck = status.Error(codes.DeadlineExceeded, "no ack from the master within the report timeout")

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

// report sends queued results to the master until ctx is done. Each is
// resent until the master acknowledges it, across reconnects, so a result
// is lost only when the worker stops. It keeps a Report stream open; a
// master that predates it gets each result through ReportStatus, oldest
// first, until the worker registers again.
func (a *Agent) report(ctx context.Context, client pb.NodeServiceClient) {
	bo := backoff{max: a.cfg.ReconnectMax}
	unaryIn := int64(-1) // the registration in which the master answered Unimplemented
	unaryLeft := 0       // results to report with ReportStatus before the stream again
	for {
		if !a.waitForResult(ctx) {
			return
		}
		if unaryLeft > 0 || a.registrations.Load() == unaryIn {
			switch {
			case a.reportOne(ctx, client, &bo):
				unaryLeft = max(unaryLeft-1, 0)
			case ctx.Err() != nil:
				return
			}
			continue
		}
		gen := a.registrations.Load()
		err := a.reportStream(ctx, client, &bo)
		switch {
		case ctx.Err() != nil:
			return
		case status.Code(err) == codes.Unimplemented:
			unaryIn = gen
			a.log.Info("master predates the Report stream; reporting each result with ReportStatus until the next registration")
		case status.Code(err) == codes.ResourceExhausted:
			// One result is larger than the master accepts, and the stream
			// cannot say which: ReportStatus answers each on its own.
			unaryLeft = a.queued()
			a.log.Warn("a result is too large for the master's Report stream; reporting the queued ones with ReportStatus", "err", err, "results", unaryLeft)
		default:
			d := bo.next()
			a.log.Warn("report stream failed; resending the unacknowledged results", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return
			}
		}
	}
}

// waitForResult waits until a result is queued, and reports whether one is
// before ctx is done.
func (a *Agent) waitForResult(ctx context.Context) bool {
	for a.queued() == 0 {
		select {
		case <-ctx.Done():
			return false
		case <-a.wake:
		}
	}
	return true
}

func (a *Agent) queued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.results)
}

// reportOne reports the oldest result with ReportStatus, and says whether
// it is done with (acknowledged or dropped). It waits out the backoff after
// a failure.
func (a *Agent) reportOne(ctx context.Context, client pb.NodeServiceClient, bo *backoff) bool {
	r := a.oldestResult()
	if r == nil {
		return true
	}
	callCtx, cancel := context.WithTimeout(ctx, reportTimeout)
	ack, err := client.ReportStatus(callCtx, r)
	cancel()
	if err == nil {
		a.answered(r, codes.OK, "", ack.GetDuplicate())
		bo.reset()
		return true
	}
	if done, handled := a.answered(r, status.Code(err), status.Convert(err).Message(), false); handled {
		return done
	}
	if ctx.Err() == nil {
		d := bo.next()
		a.log.Warn("reporting result failed", "task_id", r.GetTaskId(), "attempt", r.GetAttempt(), "err", err, "retry_in", d)
		sleep(ctx, d)
	}
	return false
}

// answered applies the master's answer to r, queued, whichever way it
// came: it reports whether r is done with (acknowledged or dropped), and
// whether the code was an answer at all (false: a failure to retry).
func (a *Agent) answered(r *pb.TaskResult, code codes.Code, msg string, duplicate bool) (done, handled bool) {
	if code == codes.OK {
		// Debug: "task finished" said it all already, and a line per task
		// costs a busy worker more than the report does.
		a.log.Debug("result reported", "task_id", r.GetTaskId(), "attempt", r.GetAttempt(), "duplicate", duplicate)
		a.acknowledged(r)
		return true, true
	}
	log := a.log.With("task_id", r.GetTaskId(), "attempt", r.GetAttempt())
	switch code {
	case codes.ResourceExhausted:
		if len(r.GetStdout())+len(r.GetStderr()) == 0 {
			log.Warn("master rejected the result as too large even without output; dropping it", "err", msg)
			a.acknowledged(r)
			return true, true
		}
		// The master accepts smaller messages than this worker's
		// WORKER_MAX_OUTPUT_BYTES allows (MASTER_GRPC_MAX_RECV_BYTES):
		// the exit status still matters, so it goes without the output.
		log.Warn("result too large for the master; reporting it without its output", "err", msg,
			"stdout_bytes", len(r.GetStdout()), "stderr_bytes", len(r.GetStderr()))
		a.shrink(r)
		return false, true
	case codes.NotFound, codes.InvalidArgument:
		// The master does not know the task: retrying cannot help.
		log.Warn("master rejected the result; dropping it", "err", msg)
		a.acknowledged(r)
		return true, true
	}
	return false, false
}

// reportStream sends the queued results on one Report stream, at most
// maxReportsInFlight unacknowledged, and applies the acks as they come,
// until the stream fails or ctx is done. A result is removed from the
// queue only when acknowledged; whatever is in flight when the stream
// fails is sent again on the next one.
func (a *Agent) reportStream(ctx context.Context, client pb.NodeServiceClient, bo *backoff) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := client.Report(sctx)
	if err != nil {
		return err
	}
	s := &reportStream{
		inflight: make(map[*pb.TaskResult]bool),
		room:     make(chan struct{}, 1),
	}
	// The watchdog ends a stream on which results wait for an ack for too
	// long, even while a Send is blocked on flow control.
	s.watchdog = time.AfterFunc(reportTimeout, func() { cancel(errNoAck) })
	s.watchdog.Stop()
	defer s.watchdog.Stop()
	acks := make(chan error, 1)
	go func() { acks <- a.receiveAcks(stream, s, bo) }()
	fail := func(err error) error {
		// Send's io.EOF says only that the master ended the stream, and
		// Recv has its status (UNIMPLEMENTED, RESOURCE_EXHAUSTED: answers
		// that change how results are sent), so the stream is left to end
		// by itself. Cancelling it would race that status with
		// CANCELLED, and hide it.
		if !errors.Is(err, io.EOF) {
			cancel(err)
		}
		recvErr := <-acks
		if errors.Is(context.Cause(sctx), errNoAck) && ctx.Err() == nil {
			return errNoAck
		}
		if errors.Is(err, io.EOF) || err == nil {
			return recvErr
		}
		return err
	}
	for {
		for _, r := range a.unsent(s) {
			if err := stream.Send(r); err != nil {
				return fail(err)
			}
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-a.wake: // a result was queued
		case <-s.room: // an ack made room, or a result is to be sent again
		case err := <-acks:
			acks <- err // for fail
			return fail(nil)
		}
	}
}

// reportStream is the state of one Report stream, under Agent.mu.
type reportStream struct {
	// inflight holds the queued results sent on this stream and not yet
	// answered.
	inflight map[*pb.TaskResult]bool
	room     chan struct{} // cap 1: wakes the sender
	watchdog *time.Timer   // armed while inflight is not empty
}

// unsent marks queued results in flight, oldest first, up to the bound,
// and returns them to send.
func (a *Agent) unsent(s *reportStream) []*pb.TaskResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*pb.TaskResult
	for _, r := range a.results {
		if len(s.inflight) >= maxReportsInFlight {
			break
		}
		if !s.inflight[r] {
			if len(s.inflight) == 0 {
				s.watchdog.Reset(reportTimeout)
			}
			s.inflight[r] = true
			out = append(out, r)
		}
	}
	return out
}

// receiveAcks applies the master's acks until the stream ends. An answer
// that asks for a retry (the master could not store the result) ends the
// stream with it, so that everything in flight is sent again.
func (a *Agent) receiveAcks(stream pb.NodeService_ReportClient, s *reportStream, bo *backoff) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, ack := range m.GetAcks() {
			r := a.inFlight(s, ack.GetTaskId(), ack.GetAttempt())
			if r == nil {
				a.log.Warn("master acknowledged a result not in flight; ignoring it", "task_id", ack.GetTaskId(), "attempt", ack.GetAttempt())
				continue
			}
			code := codes.Code(ack.GetCode())
			if _, handled := a.answered(r, code, ack.GetMessage(), ack.GetDuplicate()); !handled {
				return status.Error(code, ack.GetMessage())
			}
			if code == codes.OK {
				bo.reset()
			}
		}
		a.mu.Lock()
		if len(s.inflight) > 0 {
			s.watchdog.Reset(reportTimeout)
		} else {
			s.watchdog.Stop()
		}
		a.mu.Unlock()
		select {
		case s.room <- struct{}{}:
		default:
		}
	}
}

// inFlight takes the result of delivery (id, attempt) out of s's flight.
func (a *Agent) inFlight(s *reportStream, id string, attempt int32) *pb.TaskResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.results {
		if s.inflight[r] && r.GetTaskId() == id && r.GetAttempt() == attempt {
			delete(s.inflight, r)
			return r
		}
	}
	return nil
}

func (a *Agent) oldestResult() *pb.TaskResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.results) == 0 {
		return nil
	}
	return a.results[0]
}

// acknowledged removes r from the queue and frees its task's slot.
func (a *Agent) acknowledged(r *pb.TaskResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i := slices.Index(a.results, r); i == 0 {
		a.results = a.results[1:]
	} else if i > 0 {
		a.results = slices.Delete(a.results, i, i+1)
	}
	// A newer delivery of the same task may run here by now: it keeps its slot.
	if id := r.GetTaskId(); a.attempts[id] == r.GetAttempt() {
		delete(a.running, id)
		delete(a.attempts, id)
	}
	a.noteDrained()
}

// shrink replaces r in the queue with a copy without its output, which
// says so in its error. A copy, not r changed in place: a send of r may
// still be reading it.
func (a *Agent) shrink(r *pb.TaskResult) {
	s := proto.Clone(r).(*pb.TaskResult)
	s.StdoutTruncated = s.StdoutTruncated || len(s.Stdout) > 0
	s.StderrTruncated = s.StderrTruncated || len(s.Stderr) > 0
	s.Stdout, s.Stderr = nil, nil
	note := "output dropped: larger than the master accepts (MASTER_GRPC_MAX_RECV_BYTES)"
	if s.Error != "" {
		note = s.Error + "; " + note
	}
	s.Error = note
	a.mu.Lock()
	defer a.mu.Unlock()
	if i := slices.Index(a.results, r); i >= 0 {
		a.results[i] = s
	}
}
