package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localenv"
)

// The tests run the CLI as a user would: against a real master and workers,
// built from this repository and run as processes on loopback, and through
// run() in-process or the built roundhouse binary (for signals and stdin).

const testToken = "cli-test-token-0123456789abcdef"

// bins are the binaries built once for every test of the package.
var bins struct {
	once                       sync.Once
	err                        error
	dir                        string
	master, worker, roundhouse string
}

// TestMain removes the binaries' directory at the end; each test builds
// them on first use, so a run of one test that needs none builds nothing.
func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

func buildBins(t *testing.T) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "roundhouse-cli-test-")
		if bins.err != nil {
			return
		}
		for _, b := range []struct {
			out *string
			pkg string
		}{{&bins.master, "master"}, {&bins.worker, "worker"}, {&bins.roundhouse, "integration/cmd/roundhouse"}} {
			*b.out = filepath.Join(bins.dir, filepath.Base(b.pkg))
			cmd := exec.Command("go", "build", "-o", *b.out, "github.com/roundhouse-lab/roundhouse/"+b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// cluster is a master with an API token and its workers, as processes.
type cluster struct {
	t       *testing.T
	api     string
	grpc    string
	dir     string
	c       *client.Client
	workers map[string]*exec.Cmd
}

// startCluster starts a master and workers w1..wN, in that rotation order,
// and stops them when the test ends. The master notices a vanished worker
// after 1 s (MASTER_WORKER_TIMEOUT) so the lost-worker tests are quick.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	buildBins(t)
	cl := &cluster{t: t, dir: t.TempDir(), workers: map[string]*exec.Cmd{}}
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	cl.api, cl.grpc = "http://"+httpAddr, grpcAddr
	cl.c = client.New(cl.api, client.WithToken(testToken))
	cl.start("master", bins.master, append(localenv.MasterEnv(), "MASTER_HTTP_ADDR="+httpAddr, "MASTER_GRPC_ADDR="+grpcAddr,
		"MASTER_DB_PATH="+filepath.Join(cl.dir, "roundhouse.db"), "MASTER_API_TOKEN="+testToken, "MASTER_WORKER_TIMEOUT=1s")...)
	for i := 1; i <= n; i++ {
		cl.startWorker(fmt.Sprintf("w%d", i))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cl.c.WaitWorkers(ctx, i)
		cancel()
		if err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	return cl
}

func (cl *cluster) startWorker(id string) {
	cl.workers[id] = cl.start("worker-"+id, bins.worker, append(localenv.WorkerEnv(), "WORKER_ID="+id, "WORKER_MASTER_ADDR="+cl.grpc)...)
}

// start runs a process with its output in a log file that the test shows
// if it fails, and ends it (SIGTERM, then SIGKILL) when the test ends.
func (cl *cluster) start(name, bin string, env ...string) *exec.Cmd {
	t := cl.t
	logPath := filepath.Join(cl.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), "LOG_LEVEL=warn"), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(waited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return cmd
}

// env is the environment the CLI gets: the cluster's address and token.
func (cl *cluster) env() []string {
	return []string{"ROUNDHOUSE_API=" + cl.api, "MASTER_API_TOKEN=" + testToken}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// result is what one command printed and its exit code.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the CLI in-process with env and no stdin, and waits for it.
func cli(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &out, &errb, env)
	return result{code, out.String(), errb.String()}
}

// syncBuffer is a bytes.Buffer that a command writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond every 20 ms until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
