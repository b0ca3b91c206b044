// Command master is the Roundhouse master: it takes shell-command tasks over
// REST and hands each to exactly one connected worker, round-robin, over the
// gRPC NodeService.
//
// Configuration comes only from environment variables (see config.go and the
// README). `master healthcheck` checks a running master's /healthz and exits
// 0 or 1, for container healthchecks in an image without a shell.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/events"
	"github.com/roundhouse-lab/roundhouse/master/internal/grpcapi"
	"github.com/roundhouse-lab/roundhouse/master/internal/heapfloor"
	"github.com/roundhouse-lab/roundhouse/master/internal/httpapi"
	"github.com/roundhouse-lab/roundhouse/master/internal/liveout"
	"github.com/roundhouse-lab/roundhouse/master/internal/metrics"
	"github.com/roundhouse-lab/roundhouse/master/internal/store"
	"github.com/roundhouse-lab/roundhouse/proto/certcheck"
	"github.com/roundhouse-lab/roundhouse/proto/logbuf"
	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
)

// The event hub keeps the last eventHistory events for clients resuming
// with Last-Event-ID, and lets a stream fall eventBuffer events behind
// before it is cut off and resumed from that history.
const (
	eventHistory = 4096
	eventBuffer  = 256
)

// eventSeqSpan is how many event numbers a run reserves: more than it
// publishes (4 billion; the clock adds a million a second anyway), and few
// enough that numbers stay below 2^53, which JavaScript holds exactly,
// through a million and a half restarts within an hour of each other.
// Restarts further apart skip nothing: the clock has passed the floor.
const eventSeqSpan = 1 << 32

// wallClock is what event numbers start from; a variable for tests only.
var wallClock = time.Now

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] != "healthcheck" {
		fmt.Fprintf(os.Stderr, "usage: master [healthcheck]\n(configuration comes from MASTER_* environment variables)\n")
		os.Exit(2)
	}
	healthcheckMode := len(os.Args) > 1
	cfg, err := loadConfig(environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "master: bad configuration:\n%v\n", err)
		if healthcheckMode {
			os.Exit(1) // Docker reserves exit status 2 of a healthcheck
		}
		os.Exit(2)
	}
	if healthcheckMode {
		if err := healthcheck(cfg.HTTPAddr); err != nil {
			fmt.Fprintf(os.Stderr, "unhealthy: %v\n", err)
			os.Exit(1)
		}
		return
	}
	// First, before any goroutine or file: on success it starts the
	// program again, which comes back here with the slack raised.
	slackErr := timerslack.Raise(cfg.TimerSlack)
	log, out := logbuf.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat) // never waits for stderr
	if slackErr != nil {
		log.Warn("running with the timer slack as it was", "err", slackErr)
	}
	heapfloor.Start(cfg.HeapFloorBytes) // for the process's life
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = run(ctx, cfg, log)
	stop()
	if err != nil {
		log.Error("master stopped", "err", err)
	}
	out.Close() // the lines not written yet
	if err != nil {
		os.Exit(1)
	}
}

func environ() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// run listens on the configured addresses and serves until ctx is canceled.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	log.Info("master starting", "version", version, "grpc_addr", cfg.GRPCAddr, "http_addr", cfg.HTTPAddr,
		"db_path", cfg.DBPath, "worker_timeout", cfg.WorkerTimeout, "task_timeout", cfg.TaskTimeout,
		"max_task_timeout", cfg.MaxTaskTimeout, "max_attempts", cfg.MaxAttempts, "max_wait", cfg.MaxWait, "retention", cfg.Retention,
		"max_body_bytes", cfg.MaxBodyBytes, "max_cmd_bytes", cfg.MaxCmdBytes, "shutdown_timeout", cfg.ShutdownTimeout,
		"api_token", mask(cfg.APIToken), "worker_token", mask(cfg.WorkerToken),
		"tls_cert", cfg.TLSCert, "tls_key", cfg.TLSKey, "tls_client_ca", cfg.TLSClientCA,
		"max_header_bytes", cfg.MaxHeaderBytes, "read_header_timeout", cfg.ReadHeaderTimeout, "max_queued", cfg.MaxQueued,
		"max_event_streams", cfg.MaxEventStreams, "max_output_bytes", cfg.MaxOutputBytes, "grpc_max_recv_bytes", cfg.GRPCMaxRecvBytes,
		"live_output_bytes", cfg.LiveOutputBytes, "timer_slack", cfg.TimerSlack,
		"log_level", cfg.LogLevel, "log_format", cfg.LogFormat)
	warnInsecure(cfg, log)
	// On the wall clock: certificates are valid between two dates. Logged,
	// not refused: the workers' clocks judge the master's certificate, and
	// a wrong clock here must not stop a lab that works.
	certcheck.Log(log, certcheck.Check(time.Now(), cfg.tlsFiles...))
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("MASTER_GRPC_ADDR: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("MASTER_HTTP_ADDR: %w", err)
	}
	stopPprof, err := startPprof(cfg.PprofAddr, log)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return fmt.Errorf("MASTER_PPROF_ADDR: %w", err)
	}
	defer stopPprof()
	return serve(ctx, cfg, log, grpcLis, httpLis)
}

// serve serves workers and the API until ctx is canceled or a server fails,
// then shuts down in reverse order: stop taking tasks, end worker streams,
// let in-flight reports land, stop gRPC, close the database.
func serve(ctx context.Context, cfg config, log *slog.Logger, grpcLis, httpLis net.Listener) (err error) {
	tlsCfg := cfg.tls
	if tlsCfg == nil {
		// Off, or cfg was not made by loadConfig: with TLS off this reads
		// nothing, and a hand-made cfg with MASTER_TLS_* still gets TLS
		// rather than plaintext.
		if tlsCfg, _, err = serverTLS(cfg); err != nil {
			grpcLis.Close()
			httpLis.Close()
			return err
		}
	}
	st, err := store.Open(cfg.DBPath, log)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return fmt.Errorf("MASTER_DB_PATH: %w", err)
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the database: %w", cerr)
		}
	}()
	// The hub outlives every stream: Close below ends the open ones. Metrics
	// follow it synchronously, so they count every event.
	hub := events.NewHub(eventHistory, eventBuffer)
	// Event numbers start from the start time in µs, so that they keep
	// growing across restarts; and, should the clock have stepped back
	// since an earlier run, from past that run's numbers, which the
	// database keeps a floor of (eventSeqSpan per run).
	// A database that refuses writes (a full disk) does not keep the master
	// from starting, to serve what it has and answer 503 to the rest: the
	// numbers then start from the clock alone.
	seq0 := uint64(wallClock().UnixMilli()) * 1000
	if n, err := st.ReserveSeq(ctx, "events", seq0, eventSeqSpan); err != nil {
		log.Warn("could not reserve event numbers in the database; starting them from the clock", "err", err)
	} else {
		seq0 = n
	}
	hub.StartAfter(seq0)
	d := dispatch.New(dispatch.Params{
		Log:            log,
		Store:          st,
		Now:            utcNow,
		Mono:           monoSince(time.Now()),
		NewID:          newTaskID,
		Events:         hub,
		MaxCmdBytes:    cfg.MaxCmdBytes,
		DefaultTimeout: cfg.TaskTimeout,
		MaxTimeout:     cfg.MaxTaskTimeout,
		MaxAttempts:    cfg.MaxAttempts,
		WorkerTimeout:  cfg.WorkerTimeout,
		MaxQueued:      cfg.MaxQueued,
		MaxOutputBytes: cfg.MaxOutputBytes,
	})
	if err := d.Recover(ctx); err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	m := metrics.New(d.Stats)
	hub.Observe(m.Observe)
	// Live output follows the same events, synchronously, so a delivery's
	// buffer exists before the worker can send a chunk of it.
	live := liveout.New(cfg.LiveOutputBytes)
	hub.Observe(live.Observe)
	m.LiveOutput(live.Received)
	m.Store(st.Counts)
	gp := grpcapi.Params{Dispatcher: d, Log: log, LiveOutput: live, WorkerToken: cfg.WorkerToken, MaxRecvBytes: cfg.GRPCMaxRecvBytes}
	if tlsCfg != nil {
		gp.Creds = credentials.NewTLS(tlsCfg)
	}
	gs, health := grpcapi.New(gp)
	var grpcServing atomic.Bool
	hs := &http.Server{
		Handler: httpapi.New(httpapi.Params{
			Dispatcher:      d,
			Log:             log,
			MaxBodyBytes:    cfg.MaxBodyBytes,
			MaxWait:         cfg.MaxWait,
			Events:          hub,
			LiveOutput:      live,
			MaxEventStreams: cfg.MaxEventStreams,
			Metrics:         m.Handler(),
			APIToken:        cfg.APIToken,
			Ready: func() error {
				if !grpcServing.Load() {
					return errors.New("gRPC server is not serving")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if err := st.Ping(ctx); err != nil {
					return fmt.Errorf("database: %w", err)
				}
				// Reads answer while writes fail (a full disk, a lock
				// another process holds): not ready, since no task would
				// be accepted.
				return st.WriteErr()
			},
		}),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout, // a client trickling its headers is cut off
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      cfg.MaxWait + 30*time.Second, // a ?wait= request may take MaxWait

		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: cfg.MaxHeaderBytes,
	}

	// Each server runs in a goroutine owned by serve: errc receives its end,
	// wg waits for both before serve returns. The dispatcher's sweep loop is
	// owned the same way and stops with stopSweep; retention stops with stopRetention,
	// which also gives up a delete waiting behind writes that fail, so that
	// wg.Wait never waits for the store it comes before the Close of.
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	retentionCtx, stopRetention := context.WithCancel(context.Background())
	if cfg.Retention > 0 {
		wg.Go(func() { runRetention(retentionCtx, st, cfg.Retention, log) })
	}
	wg.Add(2)
	wg.Go(func() { d.Run(sweepCtx) })
	go func() {
		defer wg.Done()
		grpcServing.Store(true)
		health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		err := gs.Serve(grpcLis)
		grpcServing.Store(false)
		errc <- fmt.Errorf("gRPC server: %w", err)
	}()
	go func() {
		defer wg.Done()
		err := hs.Serve(httpLis)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- fmt.Errorf("HTTP server: %w", err)
	}()
	log.Info("master ready", "grpc_addr", grpcLis.Addr().String(), "http_addr", httpLis.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
	}

	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	health.Shutdown()
	// Close first: it refuses new tasks, ends every worker stream (so
	// GracefulStop need not wait on them) and wakes ?wait= requests, which
	// would otherwise hold HTTP shutdown for up to MASTER_MAX_WAIT and leave
	// no time for in-flight reports to land.
	d.Close()
	// Open event streams never go idle by themselves; ending them lets
	// hs.Shutdown return.
	hub.Close()
	live.Close() // ends open follows of task output likewise
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("HTTP shutdown", "err", err)
	}
	stopGRPC(sctx, gs)
	stopSweep()
	stopRetention()
	wg.Wait()
	log.Info("master stopped")
	return runErr
}

// warnInsecure says at start what an attacker on the network could do with
// this configuration, so an open lab is a choice and not an accident.
func warnInsecure(cfg config, log *slog.Logger) {
	if cfg.APIToken == "" {
		log.Warn("MASTER_API_TOKEN is unset: anyone who can reach the REST port can run commands on the workers")
	}
	if cfg.WorkerToken == "" && cfg.TLSClientCA == "" {
		log.Warn("neither MASTER_WORKER_TOKEN nor MASTER_TLS_CLIENT_CA is set: any program that reaches the gRPC port can join as a worker and read every task")
	}
	if cfg.TLSCert == "" && cfg.WorkerToken != "" {
		log.Warn("MASTER_TLS_CERT is unset: workers send their token, and tasks travel, in plaintext")
	}
}

// stopGRPC lets in-flight calls (result reports) finish, up to ctx's deadline.
func stopGRPC(ctx context.Context, gs *grpc.Server) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		gs.Stop()
		<-done
	}
}

// newTaskID returns a UUIDv7: unique, and sorted by creation time.
func newTaskID() string { return uuid.Must(uuid.NewV7()).String() }

// utcNow is the master's clock. In UTC because the store returns every time
// in UTC: a task's times must read the same in the answer to POST, from
// memory, as in every later GET, from the store or a compact queued task.
//
// UTC strips Go's monotonic reading, so utcNow must never measure a
// duration: a wall-clock step (NTP, a VM resumed) would move it. The
// dispatcher measures leases and deadlines on monoSince instead.
func utcNow() time.Time { return time.Now().UTC() }

// monoSince returns a monotonic clock: the time since start, which
// time.Since measures on start's monotonic reading, whatever the wall
// clock does meanwhile.
func monoSince(start time.Time) func() time.Duration {
	return func() time.Duration { return time.Since(start) }
}

// healthcheck asks the master listening on httpAddr for /healthz.
func healthcheck(httpAddr string) error {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return err
	}
	// The master listens on host alone when one is named; on every address
	// (no host, 0.0.0.0, ::) 127.0.0.1 reaches it.
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}
