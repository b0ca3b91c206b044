// Package integration tests Roundhouse from the outside: the real images as
// containers on a private network (testcontainers-go), and the real
// compose.yaml through the compose CLI. Everything is checked through the
// public REST API, as a user with curl would.
//
// Run with `make integration`, which builds the images first.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

var (
	masterImage = envOr("MASTER_IMAGE", "roundhouse/master:dev")
	workerImage = envOr("WORKER_IMAGE", "roundhouse/worker:dev")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	// Ryuk, testcontainers' reaper, is an image from a registry; every test
	// here removes what it creates with CleanupContainer / CleanupNetwork.
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	// Inside a container testcontainers takes the default gateway for the
	// Docker host; the mapped ports are on this machine's loopback.
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	for _, img := range []string{masterImage, workerImage} {
		if out, err := exec.Command("docker", "image", "inspect", img).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "image %s is missing (run `make images`): %v\n%s", img, err, out)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// lab is a master and workers on a private network, all removed at the end
// of the test. Container logs are printed when the test fails.
type lab struct {
	t       *testing.T
	ctx     context.Context
	nw      *testcontainers.DockerNetwork
	master  testcontainers.Container
	api     *client.Client
	workers map[string]testcontainers.Container
}

func newLab(t *testing.T) *lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	l := &lab{t: t, ctx: ctx, nw: nw, workers: map[string]testcontainers.Container{}}
	l.master = l.run("master", masterImage,
		network.WithNetwork([]string{"master"}, nw),
		testcontainers.WithEnv(map[string]string{"LOG_LEVEL": "debug"}),
		testcontainers.WithExposedPorts("9092/tcp"),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/healthz").WithPort("9092/tcp").WithStartupTimeout(time.Minute)),
	)
	ep, err := l.master.PortEndpoint(ctx, "9092/tcp", "http")
	if err != nil {
		t.Fatalf("master endpoint: %v", err)
	}
	l.api = client.New(ep)
	return l
}

func (l *lab) run(name, image string, opts ...testcontainers.ContainerCustomizer) testcontainers.Container {
	l.t.Helper()
	logs := &logBuffer{}
	opts = append(opts, testcontainers.WithLogConsumers(logs))
	c, err := testcontainers.Run(l.ctx, image, opts...)
	testcontainers.CleanupContainer(l.t, c)
	l.t.Cleanup(func() { // runs before the container is removed
		if l.t.Failed() {
			l.t.Logf("---- logs of %s ----\n%s", name, logs.String())
		}
	})
	if err != nil {
		l.t.Fatalf("start %s: %v", name, err)
	}
	return c
}

// startWorker starts a worker with a fixed ID and waits until the master
// lists it, so that workers started one after another join the rotation in
// that order.
func (l *lab) startWorker(id string, slots int) testcontainers.Container {
	l.t.Helper()
	before, err := l.api.Workers(l.ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	c := l.run(id, workerImage,
		network.WithNetwork([]string{id}, l.nw),
		testcontainers.WithEnv(map[string]string{
			"WORKER_ID":            id,
			"WORKER_MASTER_ADDR":   "master:50051",
			"WORKER_SLOTS":         fmt.Sprint(slots),
			"WORKER_RECONNECT_MAX": "1s",
		}),
	)
	l.workers[id] = c
	l.waitWorkers(before.WorkerCount + 1)
	return c
}

func (l *lab) waitWorkers(n int) client.Workers {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
	defer cancel()
	w, err := l.api.WaitWorkers(ctx, n)
	if err != nil {
		l.t.Fatal(err)
	}
	return w
}

func (l *lab) submit(cmd string) client.Task {
	l.t.Helper()
	tk, err := l.api.Submit(l.ctx, cmd)
	if err != nil {
		l.t.Fatal(err)
	}
	return tk
}

func (l *lab) waitFinal(id string) client.Task {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, 2*time.Minute)
	defer cancel()
	tk, err := l.api.WaitFinal(ctx, id)
	if err != nil {
		l.t.Fatal(err)
	}
	return tk
}

// logBuffer keeps a container's log for printing if the test fails.
type logBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (l *logBuffer) Accept(lg testcontainers.Log) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(lg.Content)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
