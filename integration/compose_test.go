package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// startCompose starts compose files with workers through the harness
// (composeOrchestrator: $COMPOSE) and checks that the API wants the lab's
// token: compose.yaml passes the tokens, the API wants the one from the
// environment (the probes none), and the workers registered with theirs.
func startCompose(t *testing.T, ctx context.Context, files []string, workers int, env ...string) *deployment {
	t.Helper()
	d := startLab(t, ctx, labSpec{orch: composeOrchestrator(), prefix: "rhtest", files: files, workers: workers, env: env})
	checkAPIAuth(t, d.base, d.token)
	return d
}

// The real compose.yaml, scaled to five workers: all five register under
// their compose names and tasks run round-robin across them.
func TestComposeScaleFive(t *testing.T) {
	// Cleanups run after the test function returns: the context they use
	// must outlive it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	cl := startCompose(t, ctx, []string{"compose.yaml"}, 5)
	project, api := cl.project, cl.api
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	ws, err := api.WaitWorkers(wctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Each worker derived its ID from its compose name: v2 names containers
	// project-worker-N, v1 project_worker_N.
	name := regexp.MustCompile(`^` + project + `[-_]worker[-_][1-5]$`)
	for _, id := range ws.IDs() {
		if !name.MatchString(id) {
			t.Errorf("worker ID %q is not its compose name", id)
		}
	}

	// Five plain workers and none of the labelled group, which compose.yaml
	// scales to 0 by default.
	checkHardening(t, ctx, project, map[string]int{"master": 1, "worker": 5})

	rotation := ws.IDs()
	for i := range 10 {
		tk, err := api.Submit(ctx, fmt.Sprintf("echo compose-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if tk, err = api.WaitFinal(wctx, tk.ID); err != nil {
			t.Fatal(err)
		}
		if tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("compose-%d\n", i) {
			t.Errorf("task %d: %s, stdout %q", i, tk.Status, tk.Stdout)
		}
		if want := rotation[i%5]; tk.Worker() != want {
			t.Errorf("task %d ran on %s, want %s", i, tk.Worker(), want)
		}
	}

	// The confinement as a task sees it: uid 65532, no capabilities, no
	// privilege gain, a writable and executable /tmp, nothing else writable.
	probe := `id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\t' ' '
printf '#!/bin/sh\necho script ran\n' > probe.sh && chmod +x probe.sh && ./probe.sh
touch /probe 2>&1 || true`
	tk, err := api.Submit(ctx, probe)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err = api.WaitFinal(wctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	want := "65532\nCapEff: 0000000000000000\nNoNewPrivs: 1\nscript ran\ntouch: /probe: Read-only file system\n"
	if tk.Status != "succeeded" || tk.Stdout != want {
		t.Errorf("probe task: %s, stdout %q, stderr %q; want stdout %q", tk.Status, tk.Stdout, tk.Stderr, want)
	}
}

// compose.yaml with docker/compose.tls.yaml and certificates from the
// certs tool, as `make up TLS=1` runs it: the workers connect over mutual
// TLS and run tasks.
func TestComposeMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	certs := makeCerts(t, "Roundhouse lab CA")
	cl := startCompose(t, ctx, []string{"compose.yaml", "docker/compose.tls.yaml"}, 2, "ROUNDHOUSE_CERTS="+certs)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	ws, err := cl.api.WaitWorkers(wctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		tk, err := cl.api.Submit(ctx, fmt.Sprintf("echo tls-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if tk, err = cl.api.WaitFinal(wctx, tk.ID); err != nil {
			t.Fatal(err)
		}
		if tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("tls-%d\n", i) || tk.Worker() != ws.IDs()[i] {
			t.Errorf("task %d: %s on %s, stdout %q", i, tk.Status, tk.Worker(), tk.Stdout)
		}
	}
	// The workers really use TLS: each says so when it starts.
	logs, err := cl.compose("logs", "--no-color", "worker")
	if err != nil {
		t.Fatalf("compose logs: %v\n%s", err, logs)
	}
	if n := strings.Count(logs, "tls=true client_cert=true"); n != 2 {
		t.Errorf("%d workers started with TLS and a client certificate, want 2", n)
	}
}

// hardening is what docker inspect shows of a container's confinement.
type hardening struct {
	Config struct {
		User   string
		Labels map[string]string
	}
	HostConfig struct {
		ReadonlyRootfs bool
		CapDrop        []string
		SecurityOpt    []string
		PidsLimit      *int64
		Memory         int64
		NanoCpus       int64
		Tmpfs          map[string]string
		Init           *bool
	}
}

// checkHardening asserts, through docker inspect, that compose.yaml
// confines the lab's containers: non-root, read-only root filesystems, no
// capabilities, no privilege gain; workers of both groups (worker,
// worker-gpu) also with pids, memory and CPU limits, a tmpfs /tmp and an
// init process. want is how many containers each service runs.
func checkHardening(t *testing.T, ctx context.Context, project string, want map[string]int) {
	t.Helper()
	ids, err := exec.CommandContext(ctx, "docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+project).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	out, err := exec.CommandContext(ctx, "docker", append([]string{"inspect"}, strings.Fields(string(ids))...)...).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	var cs []hardening
	if err := json.Unmarshal(out, &cs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, c := range cs {
		svc := c.Config.Labels["com.docker.compose.service"]
		seen[svc]++
		h := c.HostConfig
		checkConfined(t, svc, c.Config.User, h.ReadonlyRootfs, h.CapDrop)
		if !slices.Contains(h.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: security_opt %v, want no-new-privileges:true", svc, h.SecurityOpt)
		}
		if svc != "worker" && svc != "worker-gpu" {
			continue
		}
		if h.PidsLimit == nil || *h.PidsLimit <= 0 || *h.PidsLimit > 4096 {
			t.Errorf("%s: pids limit %v, want one", svc, h.PidsLimit)
		}
		if h.Memory != 256<<20 {
			t.Errorf("%s: memory limit %d, want the default 256m", svc, h.Memory)
		}
		if h.NanoCpus != 1e9 {
			t.Errorf("%s: cpus %d nano, want the default 1", svc, h.NanoCpus)
		}
		if h.Init == nil || !*h.Init {
			t.Errorf("%s: no init process to reap orphans", svc)
		}
		if opts := h.Tmpfs["/tmp"]; !strings.Contains(opts, "size=64m") || !strings.Contains(opts, "exec") {
			t.Errorf("%s: tmpfs /tmp %q, want an executable 64m tmpfs", svc, opts)
		}
	}
	if !maps.Equal(seen, want) {
		t.Errorf("inspected %v, want %v", seen, want)
	}
}

// `make env` names the compose project in .env, so that the README's plain
// `docker compose up -d --scale worker=5` (or `docker-compose ...`) starts
// the lab the make targets run (project roundhouse) in a checkout of any
// name: compose names a project after the directory otherwise ("main",
// "roundhouse-main"), and `make status`, `make down` and the lab targets
// would not find it. Found by running the README's commands in a worktree
// named rev-lab.
func TestComposeProjectFromEnv(t *testing.T) {
	orch := composeOrchestrator()
	dir := filepath.Join(t.TempDir(), "not-roundhouse")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml, err := os.ReadFile("../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	makefile, err := filepath.Abs("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	// A shell without the lab's variables, as a student's.
	env := environWithout("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "MASTER_API_TOKEN", "MASTER_WORKER_TOKEN")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for range 2 { // a second run adds nothing
		run("make", "-s", "-f", makefile, "env")
	}
	dotenv, err := os.ReadFile(filepath.Join(dir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"MASTER_API_TOKEN=", "MASTER_WORKER_TOKEN=", "COMPOSE_PROJECT_NAME=roundhouse\n"} {
		if n := strings.Count(string(dotenv), k); n != 1 {
			t.Errorf(".env has %d lines %q, want 1:\n%s", n, k, dotenv)
		}
	}
	var project string
	if orch.cli[0] == "docker" { // v2 prints the project's name
		var cfg struct{ Name string }
		if err := json.Unmarshal([]byte(run("docker", "compose", "config", "--format", "json")), &cfg); err != nil {
			t.Fatal(err)
		}
		project = cfg.Name
	} else { // v1 does not, but filters the containers it lists by it
		m := regexp.MustCompile(`com\.docker\.compose\.project=([a-z0-9_-]+)`).FindStringSubmatch(run(orch.cli[0], "--verbose", "ps"))
		if m == nil {
			t.Fatalf("%s --verbose ps names no project", orch.name)
		}
		project = m[1]
	}
	if project != "roundhouse" {
		t.Errorf("%s in %s runs project %q, want roundhouse, as the Makefile", orch.name, dir, project)
	}
}

// randomToken returns 32 random bytes in hex, as `make env` writes them.
func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// getStatus returns the status of a GET of url, with a bearer token unless
// token is empty.
// checkAPIAuth checks that the REST API at base keeps its liveness probe
// open and wants apiToken everywhere else: 401 without a token or with a
// wrong one, 200 with the right one.
func checkAPIAuth(t *testing.T, base, apiToken string) {
	t.Helper()
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", http.StatusOK},
		{"/tasks", "", http.StatusUnauthorized},
		{"/workers", "", http.StatusUnauthorized},
		{"/tasks", "wrong-" + apiToken, http.StatusUnauthorized},
		{"/tasks", apiToken[1:], http.StatusUnauthorized},
		{"/tasks", apiToken, http.StatusOK},
	} {
		if got := getStatus(t, base+c.path, c.token); got != c.want {
			t.Errorf("GET %s with token %q: %d, want %d", c.path, c.token, got, c.want)
		}
	}
}

// getStatus GETs url, with token as a bearer token unless it is empty, and
// returns the status code.
func getStatus(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// make env leaves a .env alone that sets the tokens and the project on
// lines of its own with `export `, which compose reads as well as plain
// ones: appending plain lines after them would replace the user's tokens
// (the last line wins) with random ones.
func TestMakeEnvKeepsExportLines(t *testing.T) {
	dotenv := "export MASTER_API_TOKEN=mine-0123456789abcdef\nexport MASTER_WORKER_TOKEN=\"worker-0123456789abcdef\"\nexport COMPOSE_PROJECT_NAME=roundhouse\n"
	if got := makeEnvOn(t, dotenv); got != dotenv {
		t.Errorf("make env changed .env\n%s\ninto\n%s", dotenv, got)
	}
}

// make env appends its lines to a .env whose last line has no newline (as
// some editors leave it) without gluing the first onto that line.
func TestMakeEnvAfterALastLineWithoutNewline(t *testing.T) {
	got := makeEnvOn(t, "LOG_LEVEL=debug")
	lines := strings.Split(got, "\n")
	if lines[0] != "LOG_LEVEL=debug" || !strings.HasPrefix(lines[1], "MASTER_API_TOKEN=") {
		t.Errorf("make env made .env\n%s\nwant LOG_LEVEL=debug on a line of its own, then the new ones", got)
	}
}

// makeEnvOn runs make env in a new directory whose .env holds dotenv and
// returns the .env it leaves.
func makeEnvOn(t *testing.T, dotenv string) string {
	t.Helper()
	makefile, err := filepath.Abs("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "-f", makefile, "env")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make env: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

// make certs works in a directory whose path has a space (ROUNDHOUSE_CERTS
// from a home directory such as "/Users/Ada Lovelace/lab"): it makes the
// certificates, keeps them the second time, and reissues the master's
// with MASTER_HOSTS.
func TestMakeCertsInAPathWithASpace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	certs := filepath.Join(t.TempDir(), "lab certs")
	runMake(t, ctx, "-s", "certs", "ROUNDHOUSE_CERTS="+certs)
	for _, f := range []string{"ca.pem", "ca-key.pem", "master.pem", "master-key.pem", "worker.pem", "worker-key.pem"} {
		if _, err := os.Stat(filepath.Join(certs, f)); err != nil {
			t.Errorf("make certs: %v", err)
		}
	}
	if fi, err := os.Stat(filepath.Join(certs, "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem: %v, %v; want mode 0600", fi, err)
	}
	if out := runMake(t, ctx, "-s", "certs", "ROUNDHOUSE_CERTS="+certs); !strings.Contains(out, "exists; remove it for new certificates") {
		t.Errorf("make certs again:\n%s\nwant it to keep the certificates", out)
	}
	if out := runMake(t, ctx, "-s", "certs", "ROUNDHOUSE_CERTS="+certs, "MASTER_HOSTS=lab.example"); !strings.Contains(out, "wrote a new master.pem") {
		t.Errorf("make certs MASTER_HOSTS=lab.example:\n%s\nwant a new master.pem", out)
	}
}
