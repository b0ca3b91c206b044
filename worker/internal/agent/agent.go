// Package agent keeps a worker attached to the master: connect, register,
// receive tasks, run them, report their results, and reconnect whenever the
// stream ends, for as long as the worker runs.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
	"github.com/roundhouse-lab/roundhouse/worker/internal/runner"
)

// errNoWelcome means the master broke the protocol: every accepted stream
// starts with a Welcome.
var errNoWelcome = errors.New("master did not open the stream with a Welcome")

// Config is what the agent needs to know about itself and its master.
type Config struct {
	MasterAddr string // host:port of the master's gRPC server
	WorkerID   string
	Slots      int // tasks run at once; the master never sends more
	MaxOutput  int // bytes kept per output stream of a task
	// ReconnectMax caps the wait between attempts to register or to report.
	ReconnectMax time.Duration
	Version      string
}

// Agent is one worker's connection to the master. Run it once.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	instanceID string // random per process, so the master tells our reconnects from an impostor
	registered atomic.Bool

	// wg tracks the reporter and the task goroutines; Run waits for them.
	wg sync.WaitGroup
	// wake tells the reporter a result was queued. It has room for one
	// signal, so senders never block and a signal is never lost.
	wake chan struct{}

	mu sync.Mutex // protects running and results
	// running holds the tasks running here or whose result the master has not
	// acknowledged yet: the master keeps counting their slots.
	running map[string]struct{}
	results []*pb.TaskResult // unacknowledged results, oldest first
}

// New returns an agent; nothing happens until Run.
func New(cfg Config, log *slog.Logger) *Agent {
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 5 * time.Second
	}
	return &Agent{
		cfg:        cfg,
		log:        log.With("component", "agent", "worker_id", cfg.WorkerID),
		instanceID: uuid.NewString(),
		wake:       make(chan struct{}, 1),
		running:    make(map[string]struct{}),
	}
}

// Registered reports whether the agent holds an accepted stream to the master.
func (a *Agent) Registered() bool { return a.registered.Load() }

// Run registers with the master and serves it until ctx is canceled,
// reconnecting whenever the stream ends. It never gives up on the master; it
// returns nil once ctx is done, after every task it started has been killed
// and waited for. Results not yet acknowledged are dropped: the master
// re-queues the tasks of a worker that disconnects.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := dial(a.cfg.MasterAddr, a.cfg.ReconnectMax)
	if err != nil {
		return fmt.Errorf("master address %q: %w", a.cfg.MasterAddr, err)
	}
	defer conn.Close()
	client := pb.NewNodeServiceClient(conn)
	a.log.Info("agent starting", "master_addr", a.cfg.MasterAddr, "instance_id", a.instanceID, "slots", a.cfg.Slots)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.report(ctx, client)
	}()

	bo := backoff{max: a.cfg.ReconnectMax}
	for {
		err := a.session(ctx, client, bo.reset)
		a.registered.Store(false)
		if ctx.Err() != nil {
			break
		}
		d := bo.next()
		if status.Code(err) == codes.AlreadyExists {
			a.log.Error("master refused registration: another process holds this worker ID", "err", err, "retry_in", d)
		} else {
			a.log.Warn("not connected to master", "err", err, "retry_in", d)
		}
		if !sleep(ctx, d) {
			break
		}
	}
	a.wg.Wait()
	a.log.Info("agent stopped")
	return nil
}

// dial holds every option of the connection to the master in one place;
// TLS and authentication belong here when they come.
func dial(addr string, reconnectMax time.Duration) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Ping every 10 s and give up 5 s later, so a master that vanished
		// without closing the connection is noticed; the master's enforcement
		// policy permits pings every 5 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// gRPC's own reconnect backoff grows to 120 s by default and calls
		// fail fast meanwhile, which would override ReconnectMax.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: backoffBase, Multiplier: 2, Jitter: 0.2, MaxDelay: reconnectMax},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
}

// session registers and runs the tasks the master sends until the stream
// ends; it calls welcomed once the master has accepted the registration.
// Tasks live on ctx, not on the stream: they outlast a lost connection.
func (a *Agent) session(ctx context.Context, client pb.NodeServiceClient, welcomed func()) error {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &pb.RegisterRequest{
		WorkerId:       a.cfg.WorkerID,
		InstanceId:     a.instanceID,
		Slots:          int32(a.cfg.Slots),
		RunningTaskIds: a.runningIDs(),
		Version:        a.cfg.Version,
	}
	stream, err := client.AssignTask(streamCtx, req)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	w := first.GetWelcome()
	if w == nil {
		return errNoWelcome
	}
	a.registered.Store(true)
	welcomed()
	a.log.Info("registered", "rotation_position", w.GetRotationPosition(), "workers", w.GetWorkers(),
		"running_task_ids", req.RunningTaskIds)
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		if t := msg.GetTask(); t != nil {
			a.start(ctx, t)
		} else {
			a.log.Warn("ignoring an assignment that is not a task", "msg", msg.String())
		}
	}
}

// start runs t in a goroutine and queues its result for the reporter.
func (a *Agent) start(ctx context.Context, t *pb.Task) {
	id := t.GetId()
	log := a.log.With("task_id", id, "attempt", t.GetAttempt())
	a.mu.Lock()
	_, dup := a.running[id]
	if !dup {
		a.running[id] = struct{}{}
	}
	a.mu.Unlock()
	if dup {
		// Running it twice at once could only do harm; the run in progress
		// reports to the master either way.
		log.Warn("task is already running here; ignoring the second delivery")
		return
	}
	timeout := t.GetTimeout().AsDuration()
	log.Info("task received", "cmd", t.GetCmd(), "timeout", timeout)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		res := runner.Run(ctx, t.GetCmd(), timeout, a.cfg.MaxOutput)
		if ctx.Err() != nil {
			log.Info("task stopped by shutdown; not reported")
			a.forget(id)
			return
		}
		log.Info("task finished", "exit_code", res.ExitCode, "error", res.Err,
			"duration", res.FinishedAt.Sub(res.StartedAt).Round(time.Millisecond),
			"stdout", string(res.Stdout), "stderr", string(res.Stderr),
			"stdout_truncated", res.StdoutTruncated, "stderr_truncated", res.StderrTruncated)
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
		})
	}()
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

// forget drops a task the master will not hear about from us.
func (a *Agent) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.running, id)
}

// sleep waits for d or for ctx to be done, and reports whether it was d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
