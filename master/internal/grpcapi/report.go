package grpcapi

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

const (
	// reportsInFlight bounds the results of one Report stream taken and not
	// yet acknowledged: past it the handler reads no more, and gRPC's flow
	// control holds the worker back.
	reportsInFlight = 256
	// maxAcksPerMessage bounds one ReportAcks.
	maxAcksPerMessage = 256
)

// taken is a result of a Report stream on its way to disk.
type taken struct {
	taskID  string
	attempt int32
	p       *dispatch.Pending // nil when err refused it before the dispatcher
	err     error
}

// Report takes a worker's results as they come, each as ReportStatus
// would, but without waiting for one's commit before reading the next, so
// that the results of a stream share group commits. A goroutine of the
// handler's acknowledges them in the order taken, each only once it is on
// disk, several to a message when they landed together. The handler
// returns once every result it took has been answered, or once the
// stream's context ends: during a store outage the writes wait for the
// disk, and a stream that is gone (its worker's, or one gRPC ends at the
// master's shutdown) must not. What it took stays queued for writing, and
// a task it finishes leaves memory once it lands (dispatch.Pending.Wait).
// The stream is long-lived: it also ends when the dispatcher closes (the
// master shuts down), after the acks of what it took, so that shutdown need
// not wait for the worker; the worker sends the rest to the next master.
//
// A worker that stops reading its acks lets the stream's flow-control
// window fill, and the next send of acks blocks. Once one has waited
// sendTimeout, as AssignTask's sends may, the handler ends the stream
// without waiting for the rest: the blocked send then fails, and its
// goroutine ends after the writes it holds. The results taken and not
// acknowledged are still written; the worker sends them again on its next
// stream and hears that they were recorded.
func (s *Server) Report(stream pb.NodeService_ReportServer) error {
	ctx := stream.Context()
	queue := make(chan taken, reportsInFlight)
	stuck := make(chan struct{}) // closed when a send of acks has waited sendTimeout
	acked := make(chan error, 1)
	go func() { acked <- s.ackReports(ctx, stream, queue, stuck) }()
	// The reader takes results on a goroutine of its own, so that the
	// handler can stop taking them while a Recv is blocked: it stops under
	// mu, and the reader enqueues only under mu, not stopped. quit wakes a
	// reader that waits, under mu, for room in the queue. Once the handler
	// has returned, gRPC ends the stream, and with it the Recv.
	var mu sync.Mutex
	stopped := false // protected by mu
	quit := make(chan struct{})
	read := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				read <- err
				return
			}
			t := taken{taskID: r.GetTaskId(), attempt: r.GetAttempt()}
			mu.Lock()
			select {
			case <-quit: // the stream is ending: take nothing more
				stopped = true
			default:
			}
			if stopped {
				mu.Unlock()
				return
			}
			if res, err := toResult(r); err != nil {
				t.err = err
			} else {
				t.p, t.err = s.reportAsync(ctx, res)
			}
			select {
			case queue <- t: // the acknowledging goroutine takes every one, even after a failed send
				mu.Unlock()
			case <-quit:
				// The stream is ending: t is written, but not acknowledged.
				// Its write is still waited for, as every one taken is,
				// until the stream's context ends.
				stopped = true
				mu.Unlock()
				if t.p != nil {
					t.p.Wait(ctx)
				}
				return
			}
		}
	}()
	errStuck := status.Errorf(codes.DeadlineExceeded, "the worker read no acks for %s; ending its report stream", s.sendTimeout)
	var err error
	select {
	case err = <-read:
	case <-s.d.Closed():
		err = status.Error(codes.Unavailable, "the master is shutting down")
	case <-stuck:
		err = errStuck
	}
	close(quit)
	mu.Lock()
	stopped = true
	mu.Unlock()
	close(queue) // nothing is sent on it any more
	if err == errStuck {
		return err
	}
	select {
	case sendErr := <-acked:
		if errors.Is(err, io.EOF) {
			return sendErr // the worker closed its side: every ack has been sent
		}
		return err
	case <-stuck:
		return errStuck
	}
}

// reportAsync is d.ReportAsync for the stream's reader, a goroutine the
// recovery interceptor does not cover: a panic, logged with its stack,
// fails that result alone with Internal, as it would fail a ReportStatus,
// instead of ending the master.
func (s *Server) reportAsync(ctx context.Context, res task.Result) (p *dispatch.Pending, err error) {
	defer recoverTo(s.log, pb.NodeService_Report_FullMethodName, &err)
	return s.d.ReportAsync(ctx, res), nil
}

// ackReports answers the results on queue in order until it is closed. It
// sends the acks it holds whenever the next result is not on disk yet, so
// none waits for a later commit. After a failed send it goes on waiting
// for the writes, and returns the send's error. It closes stuck when a
// send has waited sendTimeout, and sends nothing after that.
func (s *Server) ackReports(ctx context.Context, stream pb.NodeService_ReportServer, queue <-chan taken, stuck chan<- struct{}) error {
	var sendErr error
	// watchdog is armed only while a send is in progress.
	watchdog := time.AfterFunc(time.Hour, func() { close(stuck) })
	watchdog.Stop()
	batch := make([]*pb.ResultAck, 0, maxAcksPerMessage)
	flush := func() {
		if len(batch) > 0 && sendErr == nil {
			watchdog.Reset(s.sendTimeout)
			sendErr = stream.Send(&pb.ReportAcks{Acks: batch}) // marshalled before Send returns: batch may be reused
			if !watchdog.Stop() && sendErr == nil {
				// It fired as the send went through: the handler is ending
				// the stream, and the watchdog must not fire twice.
				sendErr = status.Error(codes.DeadlineExceeded, "the stream is ending")
			}
		}
		clear(batch)
		batch = batch[:0]
	}
	for {
		var t taken
		var ok bool
		if len(batch) == 0 {
			t, ok = <-queue
		} else {
			select {
			case t, ok = <-queue:
			default:
				flush() // nothing more has come: the acks held go now
				continue
			}
		}
		if !ok {
			flush()
			return sendErr
		}
		if t.p != nil && !t.p.Committed() {
			flush()
		}
		batch = append(batch, s.ackOf(ctx, t))
		if len(batch) == maxAcksPerMessage {
			flush()
		}
	}
}

// ackOf waits for t and answers it as ReportStatus would.
func (s *Server) ackOf(ctx context.Context, t taken) *pb.ResultAck {
	ack := &pb.ResultAck{TaskId: t.taskID, Attempt: t.attempt}
	err := t.err
	if t.p != nil {
		ack.Duplicate, err = t.p.Wait(ctx)
	}
	switch {
	case err == nil:
	case status.Code(err) == codes.Internal: // a panic reportAsync recovered, and logged
		ack.Code, ack.Message = int32(codes.Internal), status.Convert(err).Message()
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// The wait ended with the stream, its write still queued; nobody hears this.
		ack.Code, ack.Message = int32(codes.Canceled), err.Error()
	default:
		st := status.Convert(s.toStatus(err, "task_id", t.taskID, "attempt", t.attempt))
		ack.Duplicate, ack.Code, ack.Message = false, int32(st.Code()), st.Message()
	}
	return ack
}
