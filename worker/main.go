// Command worker is a Roundhouse worker: it registers with the master over
// gRPC, runs the shell commands the master assigns to it under /bin/sh -c,
// and reports each result, reconnecting whenever the master goes away.
// SIGTERM or SIGINT drains the worker: it takes no new tasks and finishes
// and reports the ones it has, for up to WORKER_DRAIN_TIMEOUT; a second
// signal stops it at once.
//
// Configuration comes only from environment variables (see config.go).
// `worker healthcheck` checks a running worker's /healthz (registered with
// its master) and exits 0 or 1, for container healthchecks; `worker
// healthcheck live` checks its /livez (serving or trying to reach its master).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/certcheck"
	"github.com/roundhouse-lab/roundhouse/proto/labels"
	"github.com/roundhouse-lab/roundhouse/proto/logbuf"
	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
	"github.com/roundhouse-lab/roundhouse/worker/internal/agent"
	"github.com/roundhouse-lab/roundhouse/worker/internal/metrics"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && (os.Args[1] != "healthcheck" || len(os.Args) > 3 || len(os.Args) == 3 && os.Args[2] != "live") {
		fmt.Fprintf(os.Stderr, "usage: worker [healthcheck [live]]\n(configuration comes from WORKER_* environment variables)\n")
		os.Exit(2)
	}
	healthcheckMode := len(os.Args) > 1
	path := "/healthz"
	if len(os.Args) == 3 {
		path = "/livez"
	}
	cfg, err := loadConfig(environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: bad configuration:\n%v\n", err)
		if healthcheckMode {
			os.Exit(1) // Docker reserves exit status 2 of a healthcheck
		}
		os.Exit(2)
	}
	if healthcheckMode {
		if err := healthcheck(cfg.HealthAddr, path); err != nil {
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
	if n, set := procsFor(cfg.Slots, runtime.GOMAXPROCS(0), os.Getenv("GOMAXPROCS")); set {
		runtime.GOMAXPROCS(n)
	}
	// Room for two signals: the first drains, the second stops at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	err = run(sigs, cfg, log)
	signal.Stop(sigs)
	if err != nil {
		log.Error("worker stopped", "err", err)
	}
	out.Close() // the lines not written yet
	if err != nil {
		os.Exit(1)
	}
}

// procsFor returns how many threads may run the worker's Go code at once
// (GOMAXPROCS), and whether to change it: one per slot, at most what the
// runtime chose (the CPUs, or the container's CPU limit), unless the
// GOMAXPROCS variable (env) sets it. The worker's Go code mostly waits, on
// its commands and on the master; with more threads than that work needs,
// the scheduler keeps spare threads spinning in search of goroutines after
// every wake-up. A worker with 1 slot on 2 cores spent about a fifth less
// CPU per task with 1 (docs/performance.md, What was optimised).
func procsFor(slots, current int, env string) (int, bool) {
	if env != "" || slots >= current {
		return current, false
	}
	return slots, true
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

// run works for the master until a signal arrives on sigs, then drains and
// stops the agent (see work) before the health server.
func run(sigs <-chan os.Signal, cfg config, log *slog.Logger) error {
	if cfg.WorkerID == "" {
		ips, err := interfaceIPs()
		if err != nil {
			log.Warn("cannot list network interfaces", "err", err)
		}
		dns, err := systemDNS("/etc/resolv.conf")
		if err != nil {
			log.Warn("cannot read /etc/resolv.conf; the worker ID will be the hostname", "err", err)
		}
		id, source, err := deriveWorkerID(context.Background(), dns, ips, os.Hostname)
		if err != nil {
			return err
		}
		cfg.WorkerID = id
		log.Info("worker ID derived", "worker_id", id, "source", source)
	}
	log.Info("worker starting", "version", version, "master_addr", cfg.MasterAddr, "worker_id", cfg.WorkerID,
		"slots", cfg.Slots, "max_output_bytes", cfg.MaxOutputBytes, "health_addr", cfg.HealthAddr, "metrics_addr", cfg.MetricsAddr,
		"reconnect_max", cfg.ReconnectMax, "drain_timeout", cfg.DrainTimeout, "timer_slack", cfg.TimerSlack, "labels", labels.String(cfg.labels), "token", mask(cfg.Token),
		"tls_ca", cfg.TLSCA, "tls_cert", cfg.TLSCert, "tls_key", cfg.TLSKey, "tls_server_name", cfg.TLSServerName,
		"log_level", cfg.LogLevel, "log_format", cfg.LogFormat)
	// On the wall clock: certificates are valid between two dates. Logged,
	// not refused: the master's clock judges the worker's certificate, and
	// a wrong clock here must not stop a worker that works.
	certcheck.Log(log, certcheck.Check(time.Now(), cfg.tlsFiles...))

	var a *agent.Agent
	m := metrics.New(func() bool { return a.Registered() })
	a = agent.New(agent.Config{
		MasterAddr:   cfg.MasterAddr,
		WorkerID:     cfg.WorkerID,
		Slots:        cfg.Slots,
		Labels:       cfg.labels,
		MaxOutput:    cfg.MaxOutputBytes,
		TaskEnv:      taskEnv(os.Environ()),
		ReconnectMax: cfg.ReconnectMax,
		Version:      version,
		Observer:     m,
		Token:        cfg.Token,
		TLS:          cfg.tls,
	}, log)

	// The health and metrics servers, each optional, run in goroutines owned
	// by run; wg waits for them after they are shut down.
	var (
		wg      sync.WaitGroup
		servers []*http.Server
	)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, hs := range servers {
			if err := hs.Shutdown(sctx); err != nil {
				log.Warn("HTTP server shutdown", "err", err)
			}
		}
		wg.Wait()
		log.Info("worker stopped")
	}()
	for _, s := range []struct {
		name, env, addr string
		h               http.Handler
	}{
		{"health", "WORKER_HEALTH_ADDR", cfg.HealthAddr, healthHandler(a.Registered, a.Serving, cfg.WorkerID)},
		{"metrics", "WORKER_METRICS_ADDR", cfg.MetricsAddr, m.Handler()},
	} {
		if s.addr == "" {
			continue
		}
		lis, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("%s: %w", s.env, err)
		}
		hs := &http.Server{Handler: s.h, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		servers = append(servers, hs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
				log.Error(s.name+" server failed", "err", err)
			}
		}()
		log.Info(s.name+" endpoint listening", "addr", lis.Addr().String())
	}
	return work(a, sigs, cfg.DrainTimeout, log)
}

// work runs a until the first signal on sigs, then drains it for at most
// drainTimeout and stops it, which kills the tasks still running. A second
// signal cuts the drain short.
func work(a *agent.Agent, sigs <-chan os.Signal, drainTimeout time.Duration, log *slog.Logger) error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// Both goroutines below are waited for before work returns.
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	select {
	case err := <-ran:
		return err // Run ends by itself only when it cannot start
	case sig := <-sigs:
		log.Info("signal received; draining", "signal", sig.String(), "drain_timeout", drainTimeout)
	}

	drainCtx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- a.Drain(drainCtx) }()
	select {
	case err := <-drained:
		if err != nil {
			log.Warn("drain incomplete; killing the tasks left, unreported", "err", err)
		}
	case sig := <-sigs:
		log.Warn("second signal; stopping at once", "signal", sig.String())
		stop()
		<-drained
	}
	stop()
	return <-ran
}

// healthHandler answers GET /healthz: 200 while the worker is registered with
// the master, 503 otherwise, so an orchestrator sees a worker cut off from
// its master. And GET /livez: 200 while the worker serves its master or
// tries to reach it (serving), registered or not, 503 once it has stopped
// (drained): for an orchestrator that replaces what is unhealthy (swarm),
// which must not kill a worker, and its tasks, for its master's outage.
func healthHandler(registered, serving func() bool, workerID string) http.Handler {
	type answer struct {
		Status     string `json:"status"`
		Registered bool   `json:"registered"`
		WorkerID   string `json:"worker_id"`
		Version    string `json:"version"`
	}
	reply := func(w http.ResponseWriter, ok bool, body answer) {
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body) // the client is gone if this fails
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		body := answer{Status: "ok", Registered: registered(), WorkerID: workerID, Version: version}
		if !body.Registered {
			body.Status = "unregistered"
		}
		reply(w, body.Registered, body)
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		body := answer{Status: "alive", Registered: registered(), WorkerID: workerID, Version: version}
		up := serving()
		if !up {
			body.Status = "stopped"
		}
		reply(w, up, body)
	})
	return mux
}

// healthcheck asks the worker whose health endpoint is healthAddr for path
// (/healthz or /livez).
func healthcheck(healthAddr, path string) error {
	if healthAddr == "" {
		return errors.New("WORKER_HEALTH_ADDR is not set, so the worker serves no health endpoint")
	}
	host, port, err := net.SplitHostPort(healthAddr)
	if err != nil {
		return err
	}
	// The worker listens on host alone when one is named; on every address
	// (no host, 0.0.0.0, ::) 127.0.0.1 reaches it.
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", path, resp.Status)
	}
	return nil
}

// taskEnv is the worker's environment without its secrets. A task that runs
// `env` would otherwise store the worker token in its output, where anyone
// with the API token reads it. (A task can still read the worker's
// /proc/<pid>/environ: it runs as the same user. This stops leaks by
// accident, not a task that goes looking; see the README's threat model.)
// The master's tokens go too: a worker started from a shell that loaded
// .env, or by `make dev`, inherits them, and MASTER_WORKER_TOKEN is the
// worker token under another name.
func taskEnv(environ []string) []string {
	return slices.DeleteFunc(slices.Clone(environ), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "WORKER_TOKEN", "MASTER_WORKER_TOKEN", "MASTER_API_TOKEN":
			return true
		}
		return strings.HasPrefix(name, "WORKER_TLS_")
	})
}
