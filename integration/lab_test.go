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
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
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
// of the test. Container logs, and the tasks the test watches, are printed
// when the test fails.
type lab struct {
	t        *testing.T
	ctx      context.Context
	nw       *testcontainers.DockerNetwork
	master   testcontainers.Container
	api      *client.Client // follows the master across restarts
	volume   string         // the master's /data volume, "" for none
	workers  map[string]testcontainers.Container
	apiToken string // the REST API's bearer token, "" for none
	// workerToken is given to every worker as WORKER_TOKEN; "" for none.
	workerToken string

	mu      sync.Mutex            // protects watched and logs
	watched []string              // task IDs dumped if the test fails
	logs    map[string]*logBuffer // each container's log, by the name run gave it
}

// labOption changes how newLab starts the master.
type labOption func(*labConfig)

type labConfig struct {
	env         map[string]string
	volume      string // named volume mounted at /data, "" for none
	apiToken    string // the REST API's bearer token, "" for none
	workerToken string // the workers' token, "" for none
	files       []testcontainers.ContainerFile
}

// withMasterEnv sets an environment variable of the master, e.g.
// MASTER_WORKER_TIMEOUT=4s to drop silent workers quickly.
func withMasterEnv(k, v string) labOption {
	return func(c *labConfig) { c.env[k] = v }
}

// withDataVolume mounts a named volume of the test's own at the master's
// /data, where its database lives, and removes it at the end.
func withDataVolume() labOption {
	return func(c *labConfig) { c.volume = fmt.Sprintf("rhtest-data-%d", time.Now().UnixNano()) }
}

// withTokens starts the master with MASTER_API_TOKEN=api and
// MASTER_WORKER_TOKEN=worker; l.api sends the API token and startWorker
// gives every worker WORKER_TOKEN=worker unless told otherwise.
func withTokens(api, worker string) labOption {
	return func(c *labConfig) {
		c.apiToken, c.workerToken = api, worker
		c.env["MASTER_API_TOKEN"] = api
		c.env["MASTER_WORKER_TOKEN"] = worker
	}
}

// withMasterFiles copies files into the master container before it starts,
// e.g. its TLS certificate and key.
func withMasterFiles(files ...testcontainers.ContainerFile) labOption {
	return func(c *labConfig) { c.files = append(c.files, files...) }
}

func newLab(t *testing.T, opts ...labOption) *lab {
	t.Helper()
	// Cleanups run after the test function returns: the context they use
	// must outlive it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	cfg := labConfig{env: map[string]string{"LOG_LEVEL": "debug"}}
	for _, o := range opts {
		o(&cfg)
	}
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	l := &lab{t: t, ctx: ctx, nw: nw, volume: cfg.volume, workers: map[string]testcontainers.Container{}, logs: map[string]*logBuffer{}, apiToken: cfg.apiToken, workerToken: cfg.workerToken}
	masterOpts := []testcontainers.ContainerCustomizer{
		network.WithNetwork([]string{"master"}, nw),
		testcontainers.WithEnv(cfg.env),
		testcontainers.WithExposedPorts("9092/tcp"),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/healthz").WithPort("9092/tcp").WithStartupTimeout(time.Minute)),
	}
	if cfg.volume != "" {
		// Registered before the container, so it runs after its removal.
		t.Cleanup(func() {
			if out, err := exec.Command("docker", "volume", "rm", "-f", cfg.volume).CombinedOutput(); err != nil {
				t.Errorf("docker volume rm %s: %v\n%s", cfg.volume, err, out)
			}
		})
		masterOpts = append(masterOpts, testcontainers.WithMounts(testcontainers.VolumeMount(cfg.volume, "/data")))
	}
	if len(cfg.files) > 0 {
		masterOpts = append(masterOpts, testcontainers.WithFiles(cfg.files...))
	}
	l.master = l.run("master", masterImage, masterOpts...)
	l.api = client.New(l.masterEndpoint(), client.WithToken(cfg.apiToken))
	// Registered after the master, so it runs while the master still answers.
	t.Cleanup(l.dumpWatched)
	return l
}

// masterEndpoint is the master's REST address on this machine's loopback.
func (l *lab) masterEndpoint() string {
	l.t.Helper()
	ep, err := l.master.PortEndpoint(l.ctx, "9092/tcp", "http")
	if err != nil {
		l.t.Fatalf("master endpoint: %v", err)
	}
	return ep
}

// restartMaster stops the master container (SIGTERM, SIGKILL after 5s) and
// starts it again, waiting for /healthz. The mapped port may change; l.api
// follows it.
func (l *lab) restartMaster() {
	l.t.Helper()
	stop := 5 * time.Second
	if err := l.master.Stop(l.ctx, &stop); err != nil {
		l.t.Fatalf("stop master: %v", err)
	}
	l.startMaster()
}

// startMaster starts the stopped or killed master container again, from
// the same database, and waits for /healthz. l.api follows the mapped port,
// which may have changed.
func (l *lab) startMaster() {
	l.t.Helper()
	if err := l.master.Start(l.ctx); err != nil {
		l.t.Fatalf("start master: %v", err)
	}
	l.api.Base = l.masterEndpoint()
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
	l.mu.Lock()
	l.logs[name] = logs
	l.mu.Unlock()
	return c
}

// waitLog polls the log of the container started as name until it matches
// re, and fails the test after a minute.
func (l *lab) waitLog(name string, re *regexp.Regexp) string {
	l.t.Helper()
	l.mu.Lock()
	logs := l.logs[name]
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
	defer cancel()
	var match string
	err := client.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		match = re.FindString(logs.String())
		return match != "", nil
	})
	if err != nil {
		l.t.Fatalf("log of %s never matched %s: %v", name, re, err)
	}
	return match
}

// workerOption changes how startWorker starts a worker.
type workerOption func(*workerConfig)

type workerConfig struct {
	env     map[string]string
	opts    []testcontainers.ContainerCustomizer
	noWait  bool // do not wait for the master to list the worker
	without []string
}

// withWorkerEnv sets an environment variable of the worker.
func withWorkerEnv(k, v string) workerOption {
	return func(c *workerConfig) { c.env[k] = v }
}

// withoutWorkerEnv leaves an environment variable of the worker unset, e.g.
// the WORKER_TOKEN a lab with tokens gives every worker.
func withoutWorkerEnv(k string) workerOption {
	return func(c *workerConfig) { c.without = append(c.without, k) }
}

// withWorkerHostConfig changes the worker container's host configuration,
// e.g. its pids and memory limits.
func withWorkerHostConfig(modify func(*container.HostConfig)) workerOption {
	return func(c *workerConfig) { c.opts = append(c.opts, testcontainers.WithHostConfigModifier(modify)) }
}

// withWorkerFiles copies files into the worker container before it starts.
func withWorkerFiles(files ...testcontainers.ContainerFile) workerOption {
	return func(c *workerConfig) { c.opts = append(c.opts, testcontainers.WithFiles(files...)) }
}

// refusedWorker starts the worker without waiting for the master to list
// it: for a worker the master must turn away.
func refusedWorker() workerOption {
	return func(c *workerConfig) { c.noWait = true }
}

// startWorker starts a worker with a fixed ID and waits until the master
// lists it, so that workers started one after another join the rotation in
// that order.
func (l *lab) startWorker(id string, slots int, opts ...workerOption) testcontainers.Container {
	l.t.Helper()
	before, err := l.api.Workers(l.ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	cfg := workerConfig{env: map[string]string{
		"WORKER_ID":            id,
		"WORKER_MASTER_ADDR":   "master:50051",
		"WORKER_SLOTS":         fmt.Sprint(slots),
		"WORKER_RECONNECT_MAX": "1s",
	}}
	if l.workerToken != "" {
		cfg.env["WORKER_TOKEN"] = l.workerToken
	}
	for _, o := range opts {
		o(&cfg)
	}
	for _, k := range cfg.without {
		delete(cfg.env, k)
	}
	c := l.run(id, workerImage, append([]testcontainers.ContainerCustomizer{
		network.WithNetwork([]string{id}, l.nw),
		testcontainers.WithEnv(cfg.env),
	}, cfg.opts...)...)
	l.workers[id] = c
	if !cfg.noWait {
		l.waitWorkers(before.WorkerCount + 1)
	}
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

// waitAllFinal polls the tasks until every one is final, and returns them
// by ID. It fails the test, showing the tasks that were not, after two
// minutes.
func (l *lab) waitAllFinal(ids []string) map[string]client.Task {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(l.ctx, 2*time.Minute)
	defer cancel()
	done := make(map[string]client.Task, len(ids))
	err := client.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		for _, id := range ids {
			if _, ok := done[id]; ok {
				continue
			}
			if tk, err := l.api.Get(ctx, id); err == nil && tk.Final() {
				done[id] = tk
			}
		}
		return len(done) == len(ids), nil
	})
	if err != nil {
		var open []string
		for _, id := range ids {
			if _, ok := done[id]; !ok {
				open = append(open, id)
			}
		}
		l.watch(open...)
		l.t.Fatalf("%d of %d tasks not final: %v", len(open), len(ids), err)
	}
	return done
}

// watch adds tasks to dump, as the API shows them, if the test fails.
func (l *lab) watch(ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watched = append(l.watched, ids...)
}

// dumpWatched logs GET /tasks/{id} of each watched task if the test failed.
func (l *lab) dumpWatched() {
	l.mu.Lock()
	ids := slices.Clone(l.watched)
	l.mu.Unlock()
	if !l.t.Failed() || len(ids) == 0 {
		return
	}
	const most = 20
	if len(ids) > most {
		l.t.Logf("showing %d of %d watched tasks", most, len(ids))
		ids = ids[:most]
	}
	for _, id := range ids {
		l.t.Logf("---- GET /tasks/%s ----\n%s", id, l.rawGet("/tasks/"+id))
	}
}

// rawGet returns the body of a GET as the API sent it, or what went wrong.
func (l *lab) rawGet(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.api.Base+path, nil)
	if err != nil {
		return err.Error()
	}
	if l.apiToken != "" {
		req.Header.Set("Authorization", "Bearer "+l.apiToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") != nil {
		return resp.Status + ": " + string(body)
	}
	return resp.Status + ": " + pretty.String()
}

// docker runs the docker CLI, for what testcontainers does not offer
// (kill, pause, network disconnect), and fails the test if it fails.
func (l *lab) docker(args ...string) string {
	l.t.Helper()
	out, err := exec.CommandContext(l.ctx, "docker", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// gate is a shell step at which a task waits until the test opens it with
// openGate: a test that acts on a running task (pauses, cuts off, kills or
// stops its worker, restarts the master, reads its output) holds the task
// there, rather than counting on a sleep to outlast the test's own steps,
// which a slow machine does not. The gate is a file in the /tmp of the
// worker container running the task, so a test opens it in every container
// the task runs in. The wait is bounded, to two minutes or more of the
// task's own running, so that a task whose test failed before opening the
// gate still ends; it then fails (exit 3) rather than pass the gate.
func gate(name string) string {
	return fmt.Sprintf("n=0; until [ -e %[1]s ] || [ $n -ge 2400 ]; do n=$((n+1)); sleep 0.05; done; [ -e %[1]s ] || exit 3", gatePath(name))
}

func gatePath(name string) string { return "/tmp/gate-" + name }

// openGate opens gate name in the containers of the given workers.
func (l *lab) openGate(name string, workers ...string) {
	l.t.Helper()
	for _, id := range workers {
		l.docker("exec", l.workers[id].GetContainerID(), "touch", gatePath(name))
	}
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
