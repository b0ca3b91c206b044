// Package agent keeps a worker attached to the master: connect, register,
// keep the session alive with heartbeats, receive tasks (and cancellations),
// run them, report their results, reconnect whenever the stream ends, and
// drain before the worker stops.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	rhproto "github.com/roundhouse-lab/roundhouse/proto"
	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

var (
	// errNoWelcome means the master broke the protocol: every accepted stream
	// starts with a Welcome.
	errNoWelcome = errors.New("master did not open the stream with a Welcome")
	// errWelcomeLate means the master accepted the stream and sent nothing:
	// a hung master, or a proxy whose backend never answers. The connection
	// answers keepalive pings all the same, so nothing else would end the wait.
	errWelcomeLate = errors.New("master accepted the stream but sent no Welcome")
	// errCanceledByMaster is the cause a task's context gets from a Cancel,
	// so the task can tell it from the worker stopping.
	errCanceledByMaster = errors.New("canceled by the master")
	// errDraining ends a session once Drain has begun or finished.
	errDraining = errors.New("the worker is draining")
)

// Config is what the agent needs to know about itself and its master.
type Config struct {
	MasterAddr string // host:port of the master's gRPC server
	WorkerID   string
	Slots      int // tasks run at once; the master never sends more
	MaxOutput  int // bytes kept per output stream of a task
	// Labels are the worker's capabilities, sent at every registration: the
	// master gives a task that requires labels only to a worker with all of
	// them. The caller has checked them (labels.Parse): the master refuses
	// a malformed set, and the agent would only retry.
	Labels map[string]string
	// TaskEnv is the environment of every task; nil gives tasks the
	// worker's own, secrets included.
	TaskEnv []string
	// ReconnectMax caps the wait between attempts to register or to report.
	ReconnectMax time.Duration
	Version      string
	Observer     Observer // hears of registrations and finished runs; nil: nobody
	// Token is sent on every call as "authorization: Bearer <token>"; empty
	// sends none.
	Token string
	// TLS secures the connection (and may carry a client certificate); nil
	// connects in plaintext.
	TLS *tls.Config

	// welcomeWait replaces welcomeWaitFor(ReconnectMax) when set: tests
	// shorten it.
	welcomeWait time.Duration
}

// minWelcomeWait is the shortest wait for a Welcome: MASTER_WORKER_TIMEOUT's
// default, which a master busy registering others, or reading the deliveries
// a worker lists from its database, is well within.
const minWelcomeWait = 10 * time.Second

// welcomeWaitFor is how long a try waits for the Welcome once the stream is
// open (the dial is bounded apart): never less than the longest wait between
// tries, so that a worker configured to be patient with its master is as
// patient with its answer.
func welcomeWaitFor(reconnectMax time.Duration) time.Duration {
	return max(minWelcomeWait, reconnectMax)
}

// Agent is one worker's connection to the master. Run it once.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	instanceID string // random per process, so the master tells our reconnects from an impostor
	registered atomic.Bool
	// registrations counts the registrations the master accepted: a live
	// output stream belongs to one.
	registrations atomic.Int64
	// out holds the live output of the runs going on here for shipOutput.
	out *shipper

	// wg tracks the reporter, the output shipper and the task goroutines;
	// Run waits for them.
	wg sync.WaitGroup
	// wake tells the reporter a result was queued. It has room for one
	// signal, so senders never block and a signal is never lost.
	wake chan struct{}
	// killed counts tasks stopped by the worker stopping, for the last log line.
	killed atomic.Int32

	// draining is canceled when Drain begins (under mu, so that start sees
	// it): no new tasks, no new sessions. closing is canceled when Drain is
	// done waiting: the open stream must close.
	draining, closing     context.Context
	startDrain, closeDown context.CancelFunc
	// drained is closed, under mu, once a drain has begun, the master has
	// answered it (or could not be asked), no registration is on its way,
	// and neither running nor awaited holds anything.
	drained chan struct{}
	// offline is closed by Run once it will open no more sessions.
	offline chan struct{}

	mu sync.Mutex // protects running, results and client
	// running holds the tasks running here, with the function that cancels
	// the run, and the tasks whose result the master has not acknowledged
	// yet, with nil: the master keeps counting the slots of both.
	running map[string]context.CancelCauseFunc
	// attempts holds the delivery (attempt) of each task in running, which
	// a registration names so that the master knows which run we hold.
	attempts map[string]int32
	results  []*pb.TaskResult     // unacknowledged results, oldest first
	client   pb.NodeServiceClient // set by Run, for Drain

	// A drain's bookkeeping. seen holds the deliveries held at its start and
	// those received since, so that Drain can tell a delivery the master
	// names that has come and gone from one still on its way; awaited holds
	// the latter until they arrive or the stream ends. asked is set once the
	// master has answered the drain, or could not be asked.
	seen, awaited map[string]int32
	// listed holds the deliveries the latest registration listed, which
	// had all arrived: the master's drain answer may still name one whose
	// result was acknowledged since (its claim stands until a heartbeat),
	// and the drain must not await it.
	listed map[string]int32
	asked  bool
	// registering is set while a registration is on its way, until its
	// Welcome has come and, if a drain began meanwhile, the master has been
	// told of the drain on the new stream: tasks can come with the Welcome,
	// so the drain is not over before that.
	registering bool
}

// New returns an agent; nothing happens until Run.
func New(cfg Config, log *slog.Logger) *Agent {
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 5 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	if cfg.welcomeWait <= 0 {
		cfg.welcomeWait = welcomeWaitFor(cfg.ReconnectMax)
	}
	a := &Agent{
		cfg:        cfg,
		log:        log.With("component", "agent", "worker_id", cfg.WorkerID),
		instanceID: uuid.NewString(),
		out:        newShipper(),
		wake:       make(chan struct{}, 1),
		drained:    make(chan struct{}),
		offline:    make(chan struct{}),
		running:    make(map[string]context.CancelCauseFunc),
		attempts:   make(map[string]int32),
		seen:       make(map[string]int32),
		awaited:    make(map[string]int32),
	}
	a.draining, a.startDrain = context.WithCancel(context.Background())
	a.closing, a.closeDown = context.WithCancel(context.Background())
	return a
}

// Registered reports whether the agent holds an accepted stream to the master.
func (a *Agent) Registered() bool { return a.registered.Load() }

// stream names the registration whose stream is open: its number (a count
// of registrations) while registered, 0 while none is. session counts a
// registration before it marks it registered, so a number read here is
// never older than the stream that was registered.
func (a *Agent) stream() int64 {
	if !a.registered.Load() {
		return 0
	}
	return a.registrations.Load()
}

// Serving reports whether the agent still serves the master or tries to:
// true until Run will open no more sessions (a drain, a stop), whether or
// not it is registered now.
func (a *Agent) Serving() bool {
	select {
	case <-a.offline:
		return false
	default:
		return true
	}
}

// Run registers with the master and serves it until ctx is canceled,
// reconnecting whenever the stream ends, until a Drain. It never gives up on
// the master; it returns nil once ctx is done, after every task it started
// has been killed and waited for. Results not yet acknowledged are dropped:
// the master re-queues the tasks of a worker that disconnects.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := newMasterConn(a.cfg)
	if err != nil {
		close(a.offline)
		return fmt.Errorf("master address %q: %w", a.cfg.MasterAddr, err)
	}
	defer conn.Close()
	client := pb.NewNodeServiceClient(conn)
	a.mu.Lock()
	a.client = client
	a.mu.Unlock()
	a.log.Info("agent starting", "master_addr", a.cfg.MasterAddr, "instance_id", a.instanceID, "slots", a.cfg.Slots,
		"tls", a.cfg.TLS != nil, "client_cert", a.cfg.TLS != nil && len(a.cfg.TLS.Certificates) > 0)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.report(ctx, client)
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.shipOutput(ctx, client)
	}()

	// A drain cuts short the wait before the next registration.
	waitCtx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	defer context.AfterFunc(a.draining, stopWait)()
	bo := backoff{max: a.cfg.ReconnectMax}
	for {
		// Each try dials the master, or finds a connection: the wait before
		// it was the agent's backoff alone (masterConn).
		err := conn.ready()
		if err == nil {
			err = a.session(ctx, client, bo.reset)
		}
		a.registered.Store(false)
		a.mu.Lock()
		a.registering = false
		clear(a.awaited) // what was on its way on that stream will not come now
		a.noteDrained()
		a.mu.Unlock()
		if ctx.Err() != nil || a.draining.Err() != nil {
			// A draining worker does not register again: the master would
			// only send it tasks to leave.
			break
		}
		d := bo.next()
		switch {
		case status.Code(err) == codes.AlreadyExists:
			a.log.Error("master refused registration: another process holds this worker ID", "err", err, "retry_in", d)
		case status.Code(err) == codes.Unauthenticated:
			// Not transient: nothing changes until someone fixes the
			// configuration, so say what to fix, and retry at the slowest pace.
			d = a.cfg.ReconnectMax
			a.log.Error("master refused the worker token: set WORKER_TOKEN to the master's MASTER_WORKER_TOKEN", "err", status.Convert(err).Message(), "retry_in", d)
		case isTLSError(err):
			d = a.cfg.ReconnectMax
			a.log.Error("TLS handshake with the master failed: check WORKER_TLS_CA, WORKER_TLS_CERT, WORKER_TLS_KEY and WORKER_TLS_SERVER_NAME against the master's MASTER_TLS_*", "err", err, "retry_in", d)
		default:
			if a.cfg.TLS == nil && strings.Contains(status.Convert(err).Message(), "server preface") {
				// What a TLS master does to a plaintext worker: close at once.
				a.log.Warn("not connected to master; if it uses TLS (MASTER_TLS_CERT), set WORKER_TLS_CA", "err", err, "retry_in", d)
				break
			}
			a.log.Warn("not connected to master", "err", err, "retry_in", d)
		}
		if !sleep(waitCtx, d) {
			break
		}
	}
	close(a.offline)
	// After a drain the tasks left and the reporter go on until ctx is done.
	<-ctx.Done()
	a.wg.Wait()
	a.log.Info("agent stopped", "tasks_killed", a.killed.Load())
	return nil
}

// dial holds every option of the connection to the master in one place.
func dial(cfg Config) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Ping every 10 s and give up 5 s later, so a master that vanished
		// without closing the connection is noticed; the master's enforcement
		// policy permits pings every 5 s. Under swarm this is also enough for a
		// service VIP: IPVS cuts only connections idle for 900 s (docker/stack.yaml
		// uses dnsrr, without IPVS, anyway).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Fixed flow-control windows, the master's too: no PING per
		// assignment.
		grpc.WithStaticStreamWindowSize(rhproto.StreamWindow),
		grpc.WithStaticConnWindowSize(rhproto.ConnWindow),
		// gRPC re-dials a failed channel on its own at the end of its
		// backoff (up to 120 s by default), and calls fail at once
		// meanwhile. The agent's tries to register do not wait for it: each
		// dials, on a new channel if need be (masterConn). Only calls made
		// while the agent does not try, the reporter's after a drain, do.
		// A quarter longer than the agent's longest wait, even 20% early,
		// so that it does not dial between two of the agent's tries as
		// well: every new channel starts gRPC's backoff afresh, and from
		// 100 ms it would dial several times there.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: cfg.ReconnectMax * 5 / 4, Multiplier: 1, Jitter: 0.2, MaxDelay: cfg.ReconnectMax * 5 / 4},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: cfg.Token, secure: cfg.TLS != nil}))
	}
	return grpc.NewClient(cfg.MasterAddr, opts...)
}

// bearer sends the worker token with every call.
type bearer struct {
	token  string
	secure bool // the connection uses TLS
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is true with TLS, so gRPC refuses to send the
// token should the connection ever be plaintext; without TLS the operator
// chose plaintext (the master warns about it at start).
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// isTLSError reports whether a call failed in the TLS handshake: a
// configuration problem on one side or the other, not a network blip.
func isTLSError(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	msg := status.Convert(err).Message()
	return strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:") || strings.Contains(msg, "authentication handshake failed")
}

// session registers and runs the tasks the master sends until the stream
// ends; it calls welcomed once the master has accepted the registration.
// Tasks live on ctx, not on the stream: they outlast a lost connection.
// The stream also ends when the heartbeat gives up on the master, and when
// a drain is over.
func (a *Agent) session(ctx context.Context, client pb.NodeServiceClient, welcomed func()) error {
	a.mu.Lock()
	if a.draining.Err() != nil {
		a.mu.Unlock()
		return errDraining
	}
	a.registering = true // until the Welcome; Run clears it if none comes
	running := a.holdingLocked()
	a.listed = make(map[string]int32, len(running))
	for _, r := range running {
		a.listed[r.GetTaskId()] = r.GetAttempt()
	}
	a.mu.Unlock()
	streamCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(a.closing, func() { cancel(errDraining) })()
	req := &pb.RegisterRequest{
		WorkerId:       a.cfg.WorkerID,
		InstanceId:     a.instanceID,
		Slots:          int32(a.cfg.Slots),
		RunningTaskIds: a.runningIDs(), // for a master that predates running
		Running:        running,
		Version:        a.cfg.Version,
		Labels:         a.cfg.Labels,
	}
	stream, err := client.AssignTask(streamCtx, req)
	if err != nil {
		return err
	}
	// A try that gets no Welcome fails, and Run tries again after its
	// backoff: a Recv without a bound waited for ever on a master that
	// accepted the stream and hung.
	late := fmt.Errorf("%w within %s", errWelcomeLate, a.cfg.welcomeWait)
	timer := time.AfterFunc(a.cfg.welcomeWait, func() { cancel(late) })
	first, err := stream.Recv()
	if !timer.Stop() {
		return late // even if the Welcome came in the same instant: the stream is canceled
	}
	if err != nil {
		return err
	}
	w := first.GetWelcome()
	if w == nil {
		return errNoWelcome
	}
	a.registrations.Add(1)
	a.registered.Store(true)
	a.cfg.Observer.Registered()
	welcomed()
	if a.draining.Err() != nil {
		// The drain began while we registered: the master may have sent
		// tasks with the Welcome, before it heard of the drain, or not heard
		// of it at all (it did not know this stream yet). Tell it now, on
		// this stream, and run what it sent: left unrun, each would come
		// back to the master as a lost attempt.
		a.log.Info("the drain began while registering; telling the master again")
		a.tellDrain(streamCtx, client)
	}
	a.mu.Lock()
	a.registering = false
	a.noteDrained()
	a.mu.Unlock()
	interval := w.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = defaultHeartbeatInterval
	}
	a.log.Info("registered", "rotation_position", w.GetRotationPosition(), "workers", w.GetWorkers(),
		"running", len(req.Running), "heartbeat_interval", interval)

	// The heartbeat belongs to this session: it ends with the stream, and
	// the session does not return before it has.
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		a.heartbeat(streamCtx, client, interval, cancel)
	}()
	defer func() {
		cancel(nil)
		<-hbDone
	}()

	for {
		msg, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(streamCtx); cause != nil && ctx.Err() == nil {
				return cause // the heartbeat or a drain ended the stream
			}
			return err
		}
		switch k := msg.GetKind().(type) {
		case *pb.Assignment_Task:
			a.start(ctx, k.Task)
		case *pb.Assignment_Cancel:
			a.cancel(k.Cancel.GetTaskId())
		default:
			a.log.Warn("ignoring an assignment that is neither a task nor a cancel", "msg", msg.String())
		}
	}
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
