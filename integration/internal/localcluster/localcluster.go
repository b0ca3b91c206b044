// Package localcluster runs a Roundhouse master and its workers as local
// processes on loopback: the one launcher behind the demo, make dev, the
// bench's process cluster and the command-line client's tests.
//
// Start runs a master (free loopback ports unless told, a database in a
// temporary directory unless told) and waits until it is ready;
// StartWorker runs a worker and waits until the master lists it. Every
// process is owned by the Cluster, which waits for it; Close stops the
// workers in reverse order of their start, then the master, each with a
// deadline, and removes the temporary directory. Each process's output
// goes, line by line and prefixed with its name, to Config.Log, or into a
// file of its own in Config.LogDir.
//
// A developer's shell may hold settings meant for the compose lab (after
// `set -a; . ./.env`, or with certificates for TLS=1): an inherited
// MASTER_WORKER_TOKEN or MASTER_TLS_* would make the master refuse the local
// workers, and several workers on one host cannot share a fixed health or
// metrics address. The launcher therefore sets every such variable itself,
// empty unless Config says otherwise (empty is unset for both binaries, and
// exec keeps the last of duplicate variables); see masterEnv and workerEnv.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// Binaries are the master and worker executables a cluster runs.
type Binaries struct{ Master, Worker string }

// RunWithBinaries is the TestMain of a package whose tests start clusters:
// it builds the master and worker once into a temporary directory named
// after prefix, sets *bins, runs the tests (m is the *testing.M) and
// removes the directory. It returns the exit code for os.Exit.
func RunWithBinaries(m interface{ Run() int }, prefix string, bins *Binaries) int {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	*bins, err = Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Build compiles the master and worker of this repository into dir, as
// static binaries (the go.work of the caller's checkout decides which
// sources).
func Build(ctx context.Context, dir string) (Binaries, error) {
	b := Binaries{Master: filepath.Join(dir, "master"), Worker: filepath.Join(dir, "worker")}
	if err := GoBuild(ctx, b.Master, "github.com/roundhouse-lab/roundhouse/master"); err != nil {
		return Binaries{}, err
	}
	if err := GoBuild(ctx, b.Worker, "github.com/roundhouse-lab/roundhouse/worker"); err != nil {
		return Binaries{}, err
	}
	return b, nil
}

// GoBuild runs go build -o out pkg with CGO_ENABLED=0, and returns the
// compiler's output in the error.
func GoBuild(ctx context.Context, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Config is one cluster's master and what all its workers share.
type Config struct {
	Bin      Binaries
	HTTPAddr string // the master's REST address; empty: a free loopback port
	GRPCAddr string // the address workers dial; empty: a free loopback port
	DBPath   string // the master's database; empty: in a temporary directory that Close removes
	// APIToken is the master's MASTER_API_TOKEN, which Client sends; empty
	// runs an open API, whatever the environment holds.
	APIToken string
	// WorkerToken is the master's MASTER_WORKER_TOKEN and every worker's
	// WORKER_TOKEN; empty runs without one.
	WorkerToken string
	MasterEnv   []string  // "K=V" entries for the master, after (so over) the launcher's own
	WorkerEnv   []string  // "K=V" entries for every worker, before Worker.Env
	Log         io.Writer // every process's output, each line prefixed "name| "; nil: discarded
	// LogDir, if set, takes Log's place: each process writes its output
	// straight into a file of its own there, named after it (master.log,
	// worker-w1.log; a worker started again under its ID appends), with no
	// prefix and nothing of this process in between, so that a launcher
	// that measures the cluster (the bench) spends no CPU on its lines.
	LogDir string
	// ReadyTimeout bounds the wait for the master's readiness and for each
	// worker's registration; default 30 s.
	ReadyTimeout time.Duration
	// StopTimeout is how long a process may take to exit after SIGTERM
	// before it gets SIGKILL; default 10 s.
	StopTimeout time.Duration
}

// Worker is one worker to start.
type Worker struct {
	ID    string
	Slots int      // WORKER_SLOTS; 0: 1
	Env   []string // "K=V" entries, after (so over) every other
}

// masterEnv is what the launcher sets for a master on top of the inherited
// environment: no TLS, no profiling address, no token files (a token and
// its file together are refused), and the tokens of cfg.
func masterEnv(cfg Config, httpAddr, grpcAddr, db string) []string {
	return []string{
		"MASTER_HTTP_ADDR=" + httpAddr, "MASTER_GRPC_ADDR=" + grpcAddr, "MASTER_DB_PATH=" + db,
		"MASTER_API_TOKEN=" + cfg.APIToken, "MASTER_WORKER_TOKEN=" + cfg.WorkerToken,
		"MASTER_API_TOKEN_FILE=", "MASTER_WORKER_TOKEN_FILE=",
		"MASTER_TLS_CERT=", "MASTER_TLS_KEY=", "MASTER_TLS_CLIENT_CA=", "MASTER_PPROF_ADDR=",
	}
}

// WorkerEnv is what a worker of this package gets on top of the inherited
// environment to join a master at grpcAddr that no Cluster started (a
// bench's stand-in master): w's ID and slots, no TLS, no token, no listen
// addresses. w.Env is not included.
func WorkerEnv(grpcAddr string, w Worker) []string { return workerEnv(Config{}, grpcAddr, w) }

// workerEnv is what the launcher sets for a worker: no TLS, no listen
// addresses (several workers share the host), the token of cfg.
func workerEnv(cfg Config, grpcAddr string, w Worker) []string {
	return []string{
		"WORKER_ID=" + w.ID, "WORKER_MASTER_ADDR=" + grpcAddr, fmt.Sprintf("WORKER_SLOTS=%d", max(w.Slots, 1)),
		"WORKER_TOKEN=" + cfg.WorkerToken, "WORKER_TOKEN_FILE=",
		"WORKER_TLS_CA=", "WORKER_TLS_CERT=", "WORKER_TLS_KEY=", "WORKER_TLS_SERVER_NAME=",
		"WORKER_HEALTH_ADDR=", "WORKER_METRICS_ADDR=",
	}
}

// Cluster is a running master and the workers started on it.
type Cluster struct {
	API      string // the master's REST base URL, http://127.0.0.1:port
	GRPCAddr string // what the workers dial
	cfg      Config
	tmp      string // the temporary database directory, "" with Config.DBPath
	log      *lockedWriter
	client   *client.Client

	mu      sync.Mutex          // protects the fields below
	master  *Process            // nil after a failed start
	procs   []*Process          // every worker started, in start order
	workers map[string]*Process // the latest worker started under each ID
	closed  bool
}

// Start runs a master and waits until its /readyz answers 200. On error
// nothing is left running.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	c := &Cluster{cfg: cfg, log: &lockedWriter{w: cfg.Log}, workers: map[string]*Process{}}
	httpAddr, grpcAddr, db := cfg.HTTPAddr, cfg.GRPCAddr, cfg.DBPath
	// A fixed address already taken (the compose lab's 9092, an earlier
	// make dev) would fail the master, while the other server there could
	// answer the readiness check in its place.
	for _, a := range []string{httpAddr, grpcAddr} {
		if a == "" {
			continue
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			return nil, fmt.Errorf("localcluster: %s is not free: %w", a, err)
		}
		l.Close()
	}
	var err error
	if httpAddr == "" {
		if httpAddr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	if grpcAddr == "" {
		if grpcAddr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	if db == "" {
		if c.tmp, err = os.MkdirTemp("", "roundhouse-local-"); err != nil {
			return nil, err
		}
		db = filepath.Join(c.tmp, "roundhouse.db")
	}
	c.API, c.GRPCAddr = "http://"+httpAddr, grpcAddr
	c.client = client.New(c.API, client.WithToken(cfg.APIToken))

	m, err := c.start("master", cfg.Bin.Master, append(masterEnv(cfg, httpAddr, grpcAddr, db), cfg.MasterEnv...))
	if err != nil {
		c.Close()
		return nil, err
	}
	c.master = m
	hc := &http.Client{Timeout: time.Second}
	err = c.await(ctx, m, func(ctx context.Context) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.API+"/readyz", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("master at %s not ready: %w", c.API, err)
	}
	return c, nil
}

// Client returns a client of the master that sends Config.APIToken.
func (c *Cluster) Client() *client.Client { return c.client }

// Master returns the master's process.
func (c *Cluster) Master() *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.master
}

// Worker returns the process last started as worker id, or nil.
func (c *Cluster) Worker(id string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workers[id]
}

// StartWorker runs a worker and waits until the master lists it as
// connected since it started, so workers started one after another join
// the rotation in that order. An ID may be used again once its previous
// process has ended. On error the new worker is stopped.
func (c *Cluster) StartWorker(ctx context.Context, w Worker) (*Process, error) {
	if w.ID == "" {
		return nil, errors.New("localcluster: a worker needs an ID")
	}
	c.mu.Lock()
	if old := c.workers[w.ID]; old != nil && !old.exited() {
		c.mu.Unlock()
		return nil, fmt.Errorf("localcluster: worker %s is still running", w.ID)
	}
	c.mu.Unlock()
	env := append(workerEnv(c.cfg, c.GRPCAddr, w), c.cfg.WorkerEnv...)
	p, err := c.start("worker-"+w.ID, c.cfg.Bin.Worker, append(env, w.Env...))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.workers[w.ID] = p
	c.mu.Unlock()
	err = c.await(ctx, p, func(ctx context.Context) bool {
		ws, err := c.client.Workers(ctx)
		if err != nil {
			return false
		}
		for _, x := range ws.Workers {
			if x.ID == w.ID && x.ConnectedAt.After(p.started) {
				return true
			}
		}
		return false
	})
	if err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("worker %s not registered with %s: %w", w.ID, c.API, err)
	}
	return p, nil
}

// StartWorkers starts workers w1..wn, one after another: that is their
// rotation order.
func (c *Cluster) StartWorkers(ctx context.Context, n int) error {
	for i := 1; i <= n; i++ {
		if _, err := c.StartWorker(ctx, Worker{ID: fmt.Sprintf("w%d", i)}); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the workers, last started first, then the master, each with
// SIGTERM and after Config.StopTimeout SIGKILL, waits for every one, and
// removes the temporary database directory. It returns what went wrong
// (a process that had to be killed); a second call does nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	procs := append([]*Process(nil), c.procs...)
	c.mu.Unlock()
	if c.master != nil {
		procs = append([]*Process{c.master}, procs...)
	}
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.tmp != "" {
		if err := os.RemoveAll(c.tmp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// await polls ready every 20 ms until it holds, p or the master exits, or
// Config.ReadyTimeout passes.
func (c *Cluster) await(ctx context.Context, p *Process, ready func(context.Context) bool) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ReadyTimeout)
	defer cancel()
	return client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		for _, q := range []*Process{p, c.master} {
			if q.exited() {
				return false, fmt.Errorf("%s exited: %v", q.Name, q.Err())
			}
		}
		return ready(ctx), nil
	})
}

// FreeAddr returns a loopback address with a port that was free just now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
