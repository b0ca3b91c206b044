package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
)

// The tests run the CLI as a user would: against a real master and workers,
// built from this repository and run as processes on loopback, and through
// run() in-process or the built roundhouse binary (for signals and stdin).

const testToken = "cli-test-token-0123456789abcdef"

// bins are the binaries built once for every test of the package.
var bins struct {
	once       sync.Once
	err        error
	dir        string
	cluster    localcluster.Binaries
	roundhouse string
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if bins.cluster, bins.err = localcluster.Build(ctx, bins.dir); bins.err != nil {
			return
		}
		bins.roundhouse = filepath.Join(bins.dir, "roundhouse")
		bins.err = localcluster.GoBuild(ctx, bins.roundhouse, "github.com/roundhouse-lab/roundhouse/integration/cmd/roundhouse")
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// cluster is a master with an API token and its workers, as processes.
type cluster struct {
	*localcluster.Cluster
	api string
	c   *client.Client
}

// startCluster starts a master and workers w1..wN, in that rotation order,
// and stops them when the test ends, showing their output if it failed.
// The master gives a vanished worker's task to another after 3 s
// (MASTER_WORKER_TIMEOUT) so the lost-worker tests are quick. Not the 1 s
// minimum: its lease (0.9 s) outlived a heartbeat (every 0.25 s) by only
// 0.65 s, and a worker or master process stalled longer than that on a
// loaded machine was dropped, its task run twice and the rotation
// reordered, failing tests about something else; 3 s allows about 2 s.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	buildBins(t)
	var log localcluster.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lc, err := localcluster.Start(ctx, localcluster.Config{
		Bin: bins.cluster, APIToken: testToken, Log: &log,
		MasterEnv: []string{"LOG_LEVEL=warn", "MASTER_WORKER_TIMEOUT=3s"}, WorkerEnv: []string{"LOG_LEVEL=warn"},
	})
	if err != nil {
		t.Fatalf("cluster: %v\n%s", err, log.String())
	}
	t.Cleanup(func() {
		if err := lc.Close(); err != nil {
			t.Errorf("cluster: %v", err)
		}
		if t.Failed() {
			t.Logf("cluster output:\n%s", log.String())
		}
	})
	if err := lc.StartWorkers(ctx, n); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return &cluster{Cluster: lc, api: lc.API, c: lc.Client()}
}

// env is the environment the CLI gets: the cluster's address and token.
func (cl *cluster) env() []string {
	return []string{"ROUNDHOUSE_API=" + cl.api, "MASTER_API_TOKEN=" + testToken}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := localcluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
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

// waitFor polls cond every 20 ms until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
