// Package grpcapi serves NodeService to workers: it turns registrations,
// streams and reports into dispatcher calls and converts between proto
// messages and task types.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
	rhproto "github.com/roundhouse-lab/roundhouse/proto"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// Limits on what a worker may claim, so one bad client cannot make the
// master allocate without bound.
const (
	maxSlots      = 1024
	maxRunningIDs = 4096
	maxIDLen      = 64
)

var workerIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Server implements NodeService on top of a Dispatcher.
type Server struct {
	pb.UnimplementedNodeServiceServer
	d           *dispatch.Dispatcher
	live        *liveout.Buffers // nil: live output is dropped
	log         *slog.Logger
	sendTimeout time.Duration
}

var _ pb.NodeServiceServer = (*Server)(nil)

// Params are the server's dependencies and settings.
type Params struct {
	Dispatcher *dispatch.Dispatcher
	Log        *slog.Logger
	// LiveOutput takes the chunks of StreamOutput; nil drops them.
	LiveOutput *liveout.Buffers
	// WorkerToken, when set, is required from workers as the metadata
	// "authorization: Bearer <token>" on every NodeService call.
	WorkerToken string
	// Creds secures the connections (TLS, optionally mutual); nil serves
	// plaintext.
	Creds credentials.TransportCredentials
	// SendTimeout bounds one send on a worker's stream: a worker that reads
	// nothing for that long is dropped. 0: the default, 10s.
	SendTimeout time.Duration
	// MaxRecvBytes bounds one incoming message. A result carries stdout
	// and stderr, so it must exceed twice the worker's output limit; the
	// dispatcher bounds what it stores (MASTER_MAX_OUTPUT_BYTES).
	MaxRecvBytes int
}

// New returns a gRPC server with NodeService, the standard health service
// and reflection (so grpcurl works against the master as it is) registered.
// Only NodeService needs the worker token: probes and grpcurl's listing
// carry no secret and reveal nothing a worker could misuse.
func New(p Params) (*grpc.Server, *health.Server) {
	log := p.Log.With("component", "grpcapi")
	auth := newWorkerAuth(p.WorkerToken, log)
	opts := []grpc.ServerOption{
		// A result carries up to WORKER_MAX_OUTPUT_BYTES of stdout and of
		// stderr, so this may need to exceed gRPC's default limit of 4 MiB.
		grpc.MaxRecvMsgSize(p.MaxRecvBytes),
		// Recovery outermost, so a panic in the auth check is caught too.
		grpc.ChainUnaryInterceptor(recoverUnary(log), auth.unary),
		grpc.ChainStreamInterceptor(recoverStream(log), auth.stream),
		// Pings every 5 s, dropped after 5 s more without an answer: a worker
		// that vanished without closing its connection leaves the rotation in
		// about 10 s instead of waiting for TCP to give up.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 5 * time.Second, Timeout: 5 * time.Second}),
		// Workers ping every 10 s; anything faster than 5 s is abuse.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Fixed flow-control windows, the worker's too: no PING per result.
		grpc.StaticStreamWindowSize(rhproto.StreamWindow),
		grpc.StaticConnWindowSize(rhproto.ConnWindow),
	}
	if p.Creds != nil {
		opts = append(opts, grpc.Creds(p.Creds))
	}
	gs := grpc.NewServer(opts...)
	if p.SendTimeout <= 0 {
		p.SendTimeout = 10 * time.Second
	}
	pb.RegisterNodeServiceServer(gs, &Server{d: p.Dispatcher, live: p.LiveOutput, log: log, sendTimeout: p.SendTimeout})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

// AssignTask registers the worker and streams its assignments until the
// worker goes away, reconnects elsewhere, or the master shuts down.
func (s *Server) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	if err := validateRegistration(req); err != nil {
		return s.toStatus(err)
	}
	sess, pos, err := s.d.Register(stream.Context(), registrationOf(req))
	if err != nil {
		s.log.Warn("registration refused", "worker_id", req.GetWorkerId(), "err", err)
		return s.toStatus(err)
	}
	defer s.d.Unregister(sess)
	log := s.log.With("worker_id", sess.WorkerID)
	out := newSender(stream, s.sendTimeout)
	defer out.close()
	welcome := &pb.Welcome{
		RotationPosition:  int32(pos),
		Workers:           int32(len(s.d.Workers())),
		HeartbeatInterval: durationpb.New(s.d.HeartbeatInterval()),
	}
	if err := out.send(&pb.Assignment{Kind: &pb.Assignment_Welcome{Welcome: welcome}}); err != nil {
		return err
	}
	ended := status.Error(codes.Unavailable, "session ended by the master (replaced by a newer connection, timed out, or shutting down)")
	for {
		// An ended session sends nothing more, even if messages are left:
		// the dispatcher has taken its tasks back.
		select {
		case <-sess.Done():
			return ended
		default:
		}
		msgs := sess.Take()
		for _, m := range msgs {
			if err := m.Ready(stream.Context(), sess.Done()); err != nil {
				if stream.Context().Err() == nil {
					log.Warn("a delivery could not be stored; ending the stream", "err", err)
				}
				return ended
			}
			select {
			case <-sess.Done(): // Ready may have seen the write land and the end at once
				return ended
			default:
			}
			if err := out.send(toMessage(m)); err != nil {
				log.Warn("send failed; worker will be dropped", "err", err)
				return err
			}
			if m.Task != nil {
				s.d.Sent(sess, *m.Task) // its deadline runs from now
			}
		}
		if len(msgs) > 0 {
			continue
		}
		select {
		case <-sess.Wake():
		case <-sess.Done():
			return ended
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// registrationOf is what a valid req asks of the dispatcher.
func registrationOf(req *pb.RegisterRequest) dispatch.Registration {
	return dispatch.Registration{
		WorkerID:   req.GetWorkerId(),
		InstanceID: req.GetInstanceId(),
		Slots:      int(req.GetSlots()),
		Running:    runningOf(req),
		Labels:     req.GetLabels(),
	}
}

// runningOf lists the deliveries a registering worker still holds. A worker
// that names only task IDs (running_task_ids, before running) leaves the
// attempt to the master: the last one it sent that worker.
func runningOf(req *pb.RegisterRequest) []dispatch.Delivery {
	var out []dispatch.Delivery
	seen := make(map[string]bool)
	for _, r := range req.GetRunning() {
		if !seen[r.GetTaskId()] {
			seen[r.GetTaskId()] = true
			out = append(out, dispatch.Delivery{TaskID: r.GetTaskId(), Attempt: int(r.GetAttempt())})
		}
	}
	for _, id := range req.GetRunningTaskIds() {
		if !seen[id] {
			seen[id] = true
			out = append(out, dispatch.Delivery{TaskID: id})
		}
	}
	return out
}

func toMessage(m dispatch.Message) *pb.Assignment {
	if m.Task == nil {
		return &pb.Assignment{Kind: &pb.Assignment_Cancel{Cancel: &pb.Cancel{TaskId: m.Cancel}}}
	}
	t := &pb.Task{Id: m.Task.ID, Cmd: m.Task.Cmd, Attempt: int32(m.Task.Attempt)}
	if m.Task.Timeout > 0 {
		t.Timeout = durationpb.New(m.Task.Timeout)
	}
	return &pb.Assignment{Kind: &pb.Assignment_Task{Task: t}}
}

// sender sends on a stream from a goroutine of its own, so that a send can
// have a deadline: gRPC's Send blocks for as long as the worker does not
// read (flow control), and would pin the handler, and the worker's tasks,
// forever. On a missed deadline the handler returns; gRPC then closes the
// stream, which ends the blocked Send and with it the goroutine.
type sender struct {
	msgs    chan *pb.Assignment
	errs    chan error // one per message taken from msgs; cap 1 so the goroutine never waits on it
	timeout time.Duration
}

func newSender(stream pb.NodeService_AssignTaskServer, timeout time.Duration) *sender {
	s := &sender{msgs: make(chan *pb.Assignment), errs: make(chan error, 1), timeout: timeout}
	go func() {
		for m := range s.msgs {
			err := stream.Send(m)
			s.errs <- err
			if err != nil {
				return
			}
		}
	}()
	return s
}

// send hands m to the goroutine and waits for it to be sent, up to the timeout.
func (s *sender) send(m *pb.Assignment) error {
	s.msgs <- m // the goroutine waits for the next message whenever send is not waiting on errs
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case err := <-s.errs:
		return err
	case <-t.C:
		return status.Errorf(codes.DeadlineExceeded, "the worker read nothing for %s; dropping it", s.timeout)
	}
}

// close ends the goroutine once its current send, if any, is over.
func (s *sender) close() { close(s.msgs) }

// ReportStatus records one task result; the ack means it is on disk.
func (s *Server) ReportStatus(ctx context.Context, r *pb.TaskResult) (*pb.ReportAck, error) {
	res, err := toResult(r)
	if err != nil {
		return nil, s.toStatus(err)
	}
	dup, err := s.d.Report(ctx, res)
	if err != nil {
		return nil, s.toStatus(err, "task_id", res.TaskID, "worker_id", res.WorkerID, "attempt", res.Attempt)
	}
	return &pb.ReportAck{Duplicate: dup}, nil
}

// maxErrorLen bounds the error text a worker may report.
const maxErrorLen = 4096

// toResult checks a reported result and converts it. Output is left to the
// dispatcher, which bounds it.
func toResult(r *pb.TaskResult) (task.Result, error) {
	switch {
	case r.GetTaskId() == "" || len(r.GetTaskId()) > maxIDLen:
		return task.Result{}, errInvalid("task_id must be 1-64 bytes")
	case !workerIDPattern.MatchString(r.GetWorkerId()):
		return task.Result{}, errInvalid("worker_id must be 1-64 characters of A-Z a-z 0-9 . _ -")
	case r.GetInstanceId() == "" || len(r.GetInstanceId()) > maxIDLen:
		return task.Result{}, errInvalid("instance_id must be 1-64 bytes")
	case r.GetAttempt() < 1:
		return task.Result{}, errInvalid("attempt must be at least 1")
	case len(r.GetError()) > maxErrorLen:
		return task.Result{}, errInvalid(fmt.Sprintf("error is longer than %d bytes", maxErrorLen))
	case r.StartedAt != nil && r.GetStartedAt().CheckValid() != nil,
		r.FinishedAt != nil && r.GetFinishedAt().CheckValid() != nil:
		return task.Result{}, errInvalid("started_at and finished_at must be valid timestamps")
	}
	return task.Result{
		TaskID:     r.GetTaskId(),
		WorkerID:   r.GetWorkerId(),
		InstanceID: r.GetInstanceId(),
		Attempt:    int(r.GetAttempt()),
		ExitCode:   int(r.GetExitCode()),
		Stdout:     r.GetStdout(),
		Stderr:     r.GetStderr(),
		StdoutCut:  r.GetStdoutTruncated(),
		StderrCut:  r.GetStderrTruncated(),
		StartedAt:  timeOrZero(r.GetStartedAt().AsTime(), r.GetStartedAt() != nil),
		FinishedAt: timeOrZero(r.GetFinishedAt().AsTime(), r.GetFinishedAt() != nil),
		Error:      r.GetError(),
		TimedOut:   r.GetTimedOut(),
		Canceled:   r.GetCanceled(),
	}, nil
}

// Heartbeat renews the worker's lease.
func (s *Server) Heartbeat(_ context.Context, r *pb.HeartbeatRequest) (*pb.HeartbeatAck, error) {
	if len(r.GetRunning()) > maxRunningIDs {
		return nil, s.toStatus(errInvalid(fmt.Sprintf("running may name at most %d tasks", maxRunningIDs)))
	}
	var holding []dispatch.Delivery
	if r.GetRunningListed() {
		holding = make([]dispatch.Delivery, 0, len(r.GetRunning()))
		for _, t := range r.GetRunning() {
			holding = append(holding, dispatch.Delivery{TaskID: t.GetTaskId(), Attempt: int(t.GetAttempt())})
		}
	}
	return &pb.HeartbeatAck{Known: s.d.Heartbeat(r.GetWorkerId(), r.GetInstanceId(), holding)}, nil
}

// Drain stops new tasks for the worker; it keeps the ones it runs.
func (s *Server) Drain(_ context.Context, r *pb.DrainRequest) (*pb.DrainAck, error) {
	held, err := s.d.Drain(r.GetWorkerId(), r.GetInstanceId())
	if err != nil {
		return nil, s.toStatus(err)
	}
	ack := &pb.DrainAck{InFlight: make([]*pb.RunningTask, len(held))}
	for i, h := range held {
		ack.InFlight[i] = &pb.RunningTask{TaskId: h.TaskID, Attempt: int32(h.Attempt)}
	}
	return ack, nil
}

func validateRegistration(req *pb.RegisterRequest) error {
	switch {
	case !workerIDPattern.MatchString(req.GetWorkerId()):
		return errInvalid("worker_id must be 1-64 characters of A-Z a-z 0-9 . _ -")
	case req.GetInstanceId() == "" || len(req.GetInstanceId()) > maxIDLen:
		return errInvalid("instance_id must be 1-64 bytes")
	case req.GetSlots() < 1 || req.GetSlots() > maxSlots:
		return errInvalid("slots must be between 1 and 1024")
	case len(req.GetRunningTaskIds()) > maxRunningIDs || len(req.GetRunning()) > maxRunningIDs:
		return errInvalid(fmt.Sprintf("running_task_ids and running may name at most %d tasks each", maxRunningIDs))
	}
	for _, r := range req.GetRunning() {
		if r.GetTaskId() == "" || len(r.GetTaskId()) > maxIDLen || r.GetAttempt() < 0 {
			return errInvalid("each running task needs a task_id of 1-64 bytes and an attempt of 0 or more")
		}
	}
	for _, id := range req.GetRunningTaskIds() {
		if id == "" || len(id) > maxIDLen {
			return errInvalid("running_task_ids must be 1-64 bytes each")
		}
	}
	// The worker checked them when it read WORKER_LABELS, but a client
	// built otherwise may send anything: this bounds what goes into the
	// registry, and keeps it in the syntax a task's requires is written in.
	if err := labels.Validate(req.GetLabels()); err != nil {
		return errInvalid("labels: " + err.Error())
	}
	return nil
}

func errInvalid(msg string) error { return fmt.Errorf("%w: %s", task.ErrInvalid, msg) }

// timeOrZero is a worker's time, or zero for none. A time the master
// cannot keep (task.Keepable: a worker's clock gone wrong) counts as none,
// so the master's own stands in; refusing it would refuse the result.
func timeOrZero(t time.Time, ok bool) time.Time {
	if !ok || !task.Keepable(t) {
		return time.Time{}
	}
	return t
}

// toStatus maps the task package's sentinel errors to gRPC codes. Any
// other error is internal: logged here, once, and answered without detail.
func (s *Server) toStatus(err error, attrs ...any) error {
	code := codes.Internal
	switch {
	case errors.Is(err, task.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, task.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, task.ErrConflict):
		code = codes.AlreadyExists
	case errors.Is(err, task.ErrClosed), errors.Is(err, task.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, task.ErrFull):
		code = codes.ResourceExhausted
	case errors.Is(err, context.Canceled):
		code = codes.Canceled // the worker gave up on the call: nothing failed here
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	if code == codes.Internal {
		s.log.Error("gRPC call failed", append(attrs, "err", err)...)
		return status.Error(code, "internal error")
	}
	return status.Error(code, err.Error())
}
