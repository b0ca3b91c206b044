package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// orchestrator is what runs a lab from the repository's own files: a
// compose CLI on compose.yaml (and overlays), or Docker Swarm on
// docker/stack.yaml. Every lab test starts its lab through startLab with
// one, so the same steps (start with N workers, scale, list and kill
// worker containers, logs, teardown) work under each.
type orchestrator struct {
	name string   // "docker compose", "docker-compose" or "swarm", for the log
	cli  []string // the compose command; nil for swarm
}

// swarmOrchestrator deploys docker/stack.yaml with `docker stack deploy`.
var swarmOrchestrator = orchestrator{name: "swarm"}

func (o orchestrator) swarm() bool { return o.cli == nil }

// composeOrchestrator is $COMPOSE if set (`make integration` sets it, once
// per compose spelling the machine has), else the v2 plugin if the docker
// CLI has it, else the v1 binary.
func composeOrchestrator() orchestrator {
	cli := strings.Fields(os.Getenv("COMPOSE"))
	if len(cli) == 0 {
		cli = []string{"docker-compose"}
		if exec.Command("docker", "compose", "version").Run() == nil {
			cli = []string{"docker", "compose"}
		}
	}
	return orchestrator{name: strings.Join(cli, " "), cli: cli}
}

// labSpec is what startLab starts.
type labSpec struct {
	orch    orchestrator
	prefix  string   // of the project (compose) or stack (swarm) name, which gets a unique suffix
	files   []string // compose files from the repository root; swarm always deploys docker/stack.yaml
	workers int      // plain workers (service worker) to start with
	env     []string // added to the environment of every command, after the lab's own
}

// deployment is a lab started by an orchestrator under a name of its own,
// with tokens of its own (the environment wins over a developer's .env),
// its API on a free port of this machine's loopback. Everything it creates
// is removed at the end of the test; if it failed, the services' logs are
// printed first.
type deployment struct {
	t       *testing.T
	ctx     context.Context
	orch    orchestrator
	project string // the compose project, or the swarm stack
	base    string // the API on this machine's loopback
	api     *client.Client
	token   string   // the API token
	env     []string // the environment of every command, also right for docker/lab.sh
	files   []string // -f arguments of every compose command
}

// labDefaults set, empty, every variable compose.yaml and docker/stack.yaml
// read to tune the lab, so that each takes the file's default
// (`${VAR:-default}` reads empty as unset), whatever the caller's shell or
// .env says: the tests' timings and counts assume those defaults. A spec's
// env comes after them and wins (exec.Cmd uses a key's last value).
var labDefaults = []string{
	"MASTER_WORKER_TIMEOUT=", "WORKER_SLOTS=", "WORKER_DRAIN_TIMEOUT=", "WORKER_MEMORY_LIMIT=",
	"WORKER_CPUS=", "WORKER_TMP_SIZE=", "WORKER_GPU_LABELS=", "LOG_LEVEL=", "LOG_FORMAT=",
}

// startLab starts spec's lab and returns at once: callers wait for the
// workers they need (apiLab().waitWorkers) and check what they want first.
func startLab(t *testing.T, ctx context.Context, spec labSpec) *deployment {
	t.Helper()
	port := freePort(t)
	d := &deployment{
		t: t, ctx: ctx, orch: spec.orch,
		project: fmt.Sprintf("%s%d", spec.prefix, time.Now().UnixNano()%1_000_000),
		base:    fmt.Sprintf("http://127.0.0.1:%d", port),
		token:   randomToken(t),
	}
	workerToken := randomToken(t)
	d.api = client.New(d.base, client.WithToken(d.token))
	t.Logf("%s: lab %s with %d workers", spec.orch.name, d.project, spec.workers)
	d.env = append(os.Environ(), fmt.Sprintf("ROUNDHOUSE_HTTP_PORT=%d", port))
	if spec.orch.swarm() {
		joinSwarm(t, ctx)
		// Secrets are files read at deploy time; TempDir removes them.
		dir := t.TempDir()
		for name, v := range map[string]string{"master_api_token": d.token, "master_worker_token": workerToken} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		node, err := exec.CommandContext(ctx, "docker", "info", "-f", "{{.Name}}").Output()
		if err != nil {
			t.Fatalf("docker info: %v", err)
		}
		d.env = append(d.env, "ROUNDHOUSE_SECRETS="+dir, "ROUNDHOUSE_MASTER_NODE="+strings.TrimSpace(string(node)),
			fmt.Sprintf("WORKERS=%d", spec.workers), "GPU_WORKERS=0")
	} else {
		d.files = spec.files
		// docker/lab.sh runs compose without -f or -p: these tell it.
		d.env = append(d.env, "COMPOSE="+strings.Join(spec.orch.cli, " "), "COMPOSE_PROJECT_NAME="+d.project,
			"COMPOSE_FILE="+strings.Join(spec.files, ":"),
			"MASTER_API_TOKEN="+d.token, "MASTER_WORKER_TOKEN="+workerToken)
	}
	d.env = append(append(d.env, labDefaults...), spec.env...)
	t.Cleanup(d.teardown)
	var out string
	var err error
	if spec.orch.swarm() {
		out, err = d.docker("stack", "deploy", "-c", "docker/stack.yaml", "--resolve-image", "never", "--detach=true", d.project)
	} else {
		out, err = d.compose("up", "-d", "--scale", fmt.Sprintf("worker=%d", spec.workers))
	}
	if err != nil {
		t.Fatalf("%s: starting the lab: %v\n%s", spec.orch.name, err, out)
	}
	return d
}

// lab is the deployment seen through its API, for the helpers the
// testcontainers tests use (waitWorkers, submit, waitFinal, watch).
func (d *deployment) apiLab() *lab {
	return &lab{t: d.t, ctx: d.ctx, api: d.api, apiToken: d.token}
}

// command runs name args in the repository root with the lab's environment.
func (d *deployment) command(name string, args ...string) (string, error) {
	cmd := exec.CommandContext(d.ctx, name, args...)
	cmd.Dir = ".." // the repository root
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// compose runs the compose CLI on the lab's project and files.
func (d *deployment) compose(args ...string) (string, error) {
	if d.orch.swarm() {
		return "", fmt.Errorf("compose %s: this lab runs on swarm", strings.Join(args, " "))
	}
	full := append(slices.Clone(d.orch.cli[1:]), "-p", d.project)
	for _, f := range d.files {
		full = append(full, "-f", f)
	}
	return d.command(d.orch.cli[0], append(full, args...)...)
}

func (d *deployment) docker(args ...string) (string, error) { return d.command("docker", args...) }

// services are the lab's services, as both files name them.
var services = []string{"master", "worker", "worker-gpu"}

// scale runs n containers of a service (worker, worker-gpu), leaving the
// rest of the lab alone.
func (d *deployment) scale(service string, n int) {
	d.t.Helper()
	var out string
	var err error
	if d.orch.swarm() {
		out, err = d.docker("service", "scale", "--detach", fmt.Sprintf("%s_%s=%d", d.project, service, n))
	} else {
		out, err = d.compose("up", "-d", "--no-recreate", "--no-deps", "--no-build", "--scale", fmt.Sprintf("%s=%d", service, n), service)
	}
	if err != nil {
		d.t.Fatalf("scale %s to %d: %v\n%s", service, n, err, out)
	}
}

// workerContainers maps the worker IDs of the lab's running worker
// containers, both groups, to container IDs. Under compose a worker is
// named after its container (project-worker-3); under swarm after its task
// slot (stack_worker.3), and the container's task name adds the task ID.
func (d *deployment) workerContainers() map[string]string {
	d.t.Helper()
	found := map[string]string{}
	for _, svc := range services[1:] {
		filters, format := []string{"label=com.docker.compose.project=" + d.project, "label=com.docker.compose.service=" + svc}, "{{.ID}} {{.Names}}"
		if d.orch.swarm() {
			filters, format = []string{"label=com.docker.swarm.service.name=" + d.project + "_" + svc}, `{{.ID}} {{.Label "com.docker.swarm.task.name"}}`
		}
		args := []string{"ps", "--format", format}
		for _, f := range filters {
			args = append(args, "--filter", f)
		}
		out, err := d.docker(args...)
		if err != nil {
			d.t.Fatalf("docker ps: %v\n%s", err, out)
		}
		for line := range strings.Lines(out) {
			id, name, _ := strings.Cut(strings.TrimSpace(line), " ")
			if d.orch.swarm() { // stack_worker.3.<task ID>
				parts := strings.SplitN(name, ".", 3)
				name = parts[0] + "." + parts[1]
			}
			found[name] = id
		}
	}
	return found
}

// killWorker sends SIGKILL to the container of worker id and returns the
// container's ID.
func (d *deployment) killWorker(id string) string {
	d.t.Helper()
	c, ok := d.workerContainers()[id]
	if !ok {
		d.t.Fatalf("no running container for worker %s", id)
	}
	if out, err := d.docker("kill", c); err != nil {
		d.t.Fatalf("docker kill %s: %v\n%s", c, err, out)
	}
	return c
}

// logs returns every service's log, with timestamps.
func (d *deployment) logs() string {
	if !d.orch.swarm() {
		out, _ := d.compose("logs", "--no-color", "--timestamps")
		return out
	}
	var b strings.Builder
	for _, svc := range services {
		out, _ := d.docker("service", "logs", "--timestamps", "--no-trunc", d.project+"_"+svc)
		fmt.Fprintf(&b, "-- %s --\n%s", svc, out)
	}
	return b.String()
}

// teardown prints the logs if the test failed, then removes the lab. It
// runs after the test, whose context may be spent (a test that ran into its
// deadline), so it takes a context of its own: the lab goes all the same.
func (d *deployment) teardown() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), 3*time.Minute)
	defer cancel()
	td := *d
	td.ctx = ctx
	if td.t.Failed() {
		td.t.Logf("---- %s logs ----\n%s", td.orch.name, td.logs())
	}
	if !td.orch.swarm() {
		if out, err := td.compose("down", "--volumes", "--remove-orphans"); err != nil {
			td.t.Errorf("compose down: %v\n%s", err, out)
		}
		return
	}
	removeStack(td.t, ctx, td.project)
}

// removeStack removes a stack and, unlike `docker stack rm`, waits until
// it is gone and removes its volumes too: the engine is left without a
// service, container, secret, network or volume of the stack.
func removeStack(t *testing.T, ctx context.Context, stack string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, "docker", "stack", "rm", stack).CombinedOutput(); err != nil {
		t.Errorf("docker stack rm: %v\n%s", err, out)
	}
	label := "label=com.docker.stack.namespace=" + stack
	left := func(what ...string) string {
		out, _ := exec.CommandContext(ctx, "docker", append(what, "-q", "--filter", label)...).Output()
		return strings.TrimSpace(string(out))
	}
	// Containers stop after their grace period, then the network goes.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := client.Poll(wctx, 250*time.Millisecond, func() (bool, error) {
		return left("ps", "-a") == "" && left("network", "ls") == "", nil
	}); err != nil {
		t.Errorf("stack %s: containers %q, networks %q still there: %v", stack, left("ps", "-a"), left("network", "ls"), err)
	}
	if vs := strings.Fields(left("volume", "ls")); len(vs) > 0 {
		if out, err := exec.CommandContext(ctx, "docker", append([]string{"volume", "rm"}, vs...)...).CombinedOutput(); err != nil {
			t.Errorf("docker volume rm: %v\n%s", err, out)
		}
	}
	for _, what := range [][]string{{"service", "ls"}, {"secret", "ls"}, {"volume", "ls"}} {
		if ids := left(what...); ids != "" {
			t.Errorf("stack %s left %s: %s", stack, what[0], ids)
		}
	}
}

// joinSwarm makes sure the engine is a swarm manager. If it was in no
// swarm, it initialises a single-node one and, at the end of the test,
// leaves it again, removing the bridge swarm created if there was none.
func joinSwarm(t *testing.T, ctx context.Context) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").Output()
	if err != nil {
		t.Fatalf("docker info: %v", err)
	}
	switch state := strings.TrimSpace(string(out)); state {
	case "active true":
		return
	case "inactive false":
	default:
		t.Fatalf("the engine is in swarm state %q: a manager of an active swarm, or in none, is needed", state)
	}
	hadBridge := exec.CommandContext(ctx, "docker", "network", "inspect", "docker_gwbridge").Run() == nil
	if out, err := exec.CommandContext(ctx, "docker", "swarm", "init").CombinedOutput(); err != nil {
		t.Fatalf("docker swarm init: %v\n%s", err, out)
	}
	t.Log("initialised a single-node swarm; the test leaves it at the end")
	t.Cleanup(func() {
		// A context of its own: the test's may be spent by now.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "docker", "swarm", "leave", "--force").CombinedOutput(); err != nil {
			t.Errorf("docker swarm leave: %v\n%s", err, out)
		}
		if !hadBridge {
			if out, err := exec.CommandContext(ctx, "docker", "network", "rm", "docker_gwbridge").CombinedOutput(); err != nil {
				t.Errorf("docker network rm docker_gwbridge: %v\n%s", err, out)
			}
		}
	})
}

// checkConfined asserts what every service of the lab gets under compose
// and swarm alike: a non-root user, a read-only root filesystem and no
// capabilities.
func checkConfined(t *testing.T, svc, user string, readonlyRootfs bool, capDrop []string) {
	t.Helper()
	if u := strings.Split(user, ":")[0]; u == "" || u == "0" || u == "root" {
		t.Errorf("%s runs as user %q, want non-root", svc, user)
	}
	if !readonlyRootfs {
		t.Errorf("%s: root filesystem is writable", svc)
	}
	if !slices.Equal(capDrop, []string{"ALL"}) {
		t.Errorf("%s: cap_drop %v, want [ALL]", svc, capDrop)
	}
}

// A lab's teardown runs after the test, when the test's context may have
// run out: a test that hit its deadline is the one whose lab would
// otherwise stay behind, and whose logs are wanted. The teardown must still
// remove the lab. A compose CLI that only records what it is asked to do
// stands in for the real one.
func TestTeardownAfterTheTestContext(t *testing.T) {
	record := filepath.Join(t.TempDir(), "compose")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as after the test's deadline
	d := &deployment{
		t: t, ctx: ctx, project: "rhteardown",
		orch: orchestrator{name: "recording compose", cli: []string{"sh", "-c", `echo "$*" >>"$RECORD"`, "compose"}},
		env:  []string{"PATH=" + envOr("PATH", "/usr/bin:/bin"), "RECORD=" + record},
	}
	d.teardown()
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("the compose CLI never ran: %v", err)
	}
	if want := "-p rhteardown down --volumes --remove-orphans\n"; !strings.HasSuffix(string(got), want) {
		t.Errorf("teardown ran compose with\n%s\nwant it to end with %q", got, want)
	}
}

// Every variable compose.yaml and docker/stack.yaml read with a default is
// pinned to it by labDefaults, or set by startLab itself, or names an image
// (make integration's choice, MASTER_IMAGE and WORKER_IMAGE): a variable
// added to either file without a line here would let the caller's shell
// change what the container tests run.
func TestLabDefaultsCoverTheLabFiles(t *testing.T) {
	setByStartLab := map[string]bool{"ROUNDHOUSE_HTTP_PORT": true, "WORKERS": true, "GPU_WORKERS": true,
		"ROUNDHOUSE_SECRETS": true, "ROUNDHOUSE_MASTER_NODE": true, "MASTER_IMAGE": true, "WORKER_IMAGE": true}
	pinned := map[string]bool{}
	for _, kv := range labDefaults {
		name, v, _ := strings.Cut(kv, "=")
		if v != "" {
			t.Errorf("labDefaults sets %s to %q, want it empty (the file's default)", name, v)
		}
		pinned[name] = true
	}
	read := regexp.MustCompile(`\$\{([A-Z0-9_]+):-`)
	for _, f := range []string{"../compose.yaml", "../docker/stack.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range read.FindAllStringSubmatch(string(b), -1) {
			if !pinned[m[1]] && !setByStartLab[m[1]] {
				t.Errorf("%s reads ${%s:-...}, which labDefaults does not pin", f, m[1])
			}
		}
	}
}

// fakeDocker writes script as a `docker` into a directory of its own and
// returns a PATH that finds it first: the tests of the Makefile's and
// docker/'s shell code run against it, without an engine.
func fakeDocker(t *testing.T, script string) (path string) {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + bin + ":" + envOr("PATH", "/usr/bin:/bin")
}

// environWithout is the test's environment less the variables named: a
// shell without the lab's settings, as a student's.
func environWithout(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(names, k) {
			env = append(env, kv)
		}
	}
	return env
}

// dotenvCase is a .env, named for what it tries.
type dotenvCase struct{ name, dotenv string }

// dotenvSpellings are the ways a .env can set key to value that compose
// reads alike (the last line that sets it wins, with or without export and
// quotes); other is another key, set between two lines of key.
func dotenvSpellings(key, value, other string) []dotenvCase {
	return []dotenvCase{
		{"plain", key + "=" + value},
		{"double quotes", key + `="` + value + `"`},
		{"single quotes", key + "='" + value + "'"},
		{"export", "export " + key + "=" + value},
		{"the last of two", key + "=an-old-one-0123456789\n" + other + "=a\n" + key + "=" + value},
	}
}

// checkoutWithDotenv is a new directory like a checkout for make and the
// lab's scripts to run in: dotenv as its .env and the repository's
// docker/ (root is the repository's directory).
func checkoutWithDotenv(t *testing.T, root, dotenv string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "docker"), filepath.Join(dir, "docker")); err != nil {
		t.Fatal(err)
	}
	return dir
}
