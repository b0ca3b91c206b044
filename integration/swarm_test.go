package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
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

// docker/stack.yaml on a single-node swarm (one of the test's own if the
// engine is in none): workers named after their task slots, scaled to 4,
// tasks in rotation order by worker ID, a killed worker's task re-run and
// the restarted task back in the rotation under its old ID; then the
// stack, its volume and any swarm the test made are gone.
func TestSwarm(t *testing.T) {
	began := time.Now()
	t.Cleanup(func() { t.Logf("TestSwarm took %s, teardown included", time.Since(began).Round(time.Second)) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	d := startLab(t, ctx, labSpec{orch: swarmOrchestrator, prefix: "rhswarm", workers: 2})
	l := d.apiLab()
	l.waitWorkers(2)
	// The secrets reach the master: it wants the token written to its file.
	checkAPIAuth(t, d.base, d.token)

	d.scale("worker", 4)
	ws := l.waitWorkers(4)
	slot := regexp.MustCompile(`^` + d.project + `_worker\.([1-4])$`)
	for _, id := range ws.IDs() {
		if !slot.MatchString(id) {
			t.Errorf("worker ID %q is not its task slot's name (%s_worker.N)", id, d.project)
		}
	}
	if ids := slices.Sorted(slices.Values(ws.IDs())); len(slices.Compact(ids)) != 4 {
		t.Fatalf("worker IDs %v, want 4 different ones", ws.IDs())
	}
	checkSwarmHardening(t, d, map[string]int{"master": 1, "worker": 4})

	rotation := checkRotation(t, l, 8)

	// SIGKILL the container of the worker running a task: swarm starts a
	// new task in the same slot, so a new process under the same worker ID.
	// The task waits at a gate that the test opens in every worker
	// container once the victim is back: so it is running at the kill,
	// however slow the machine, and its re-run passes wherever it goes.
	long := l.submit(gate("swarm") + "; echo slept")
	l.watch(long.ID)
	running := waitTask(t, l, long.ID, 30*time.Second, "it to run", func(tk client.Task) bool { return tk.Status == "running" })
	victim := running.Worker()
	killed := d.killWorker(victim)
	at := time.Now()
	waitWorkerGone(t, l, victim, labWorkerTimeout+5*time.Second)
	t.Logf("killed %s (container %.12s): dropped after %s", victim, killed, time.Since(at).Round(100*time.Millisecond))
	// Swarm restarts the slot (restart_policy delay 1s) in a new container:
	// the same worker ID registers again, the old session being closed.
	waitWorkerBack(t, l, victim, time.Minute)
	t.Logf("%s back in the rotation %s after the kill", victim, time.Since(at).Round(100*time.Millisecond))
	containers := d.workerContainers()
	if c := containers[victim]; c == "" || c == killed {
		t.Errorf("worker %s runs in container %q, want a new one, not the killed %.12s", victim, c, killed)
	}
	for id, c := range containers {
		if out, err := d.docker("exec", c, "touch", gatePath("swarm")); err != nil {
			t.Fatalf("opening the gate in worker %s's container %.12s: %v\n%s", id, c, err, out)
		}
	}
	// The new process does not claim the task, so the master re-queues it
	// after MASTER_WORKER_TIMEOUT, and it runs again somewhere.
	tk := waitTask(t, l, long.ID, labWorkerTimeout+time.Minute, "the killed worker's task to finish", client.Task.Final)
	if tk.Status != "succeeded" || tk.Stdout != "slept\n" || len(tk.History) != 2 {
		t.Fatalf("task: %s, stdout %q, history %s; want succeeded after 2 deliveries", tk.Status, tk.Stdout, trail(tk))
	}
	if h := tk.History[0]; h.Outcome != "lost" || h.WorkerID != victim {
		t.Errorf("first delivery: %s on %s, want lost on %s", h.Outcome, h.WorkerID, victim)
	}
	t.Logf("the killed task ran again on %s and succeeded %s after the kill", tk.History[1].WorkerID, time.Since(at).Round(100*time.Millisecond))
	after := checkRotation(t, l, 4)
	t.Logf("rotation before the kill %v, after %v", rotation, after)

	// The master away for longer than the workers' health window (three
	// failed checks 5 s apart): swarm replaces unhealthy tasks, so the
	// stack checks its workers alive (/livez), not registered. They wait for
	// the master in the same containers, and register again once it is back.
	before := d.workerContainers()
	d.scale("master", 0)
	outage := time.Now()
	checkAliveThrough(t, d, before, outage, 4)
	d.scale("master", 1)
	l.waitWorkers(4)
	t.Logf("master back %s after it stopped; the workers registered again", time.Since(outage).Round(100*time.Millisecond))
	if now := d.workerContainers(); !maps.Equal(now, before) {
		t.Errorf("worker containers after the master's outage %v, want the same as before it %v", now, before)
	}
}

// checkAliveThrough waits until each of containers (worker ID to container)
// has passed n health checks that began after since, and fails the test at
// the first failed one or at a container gone (replaced).
func checkAliveThrough(t *testing.T, d *deployment, containers map[string]string, since time.Time, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Duration(n)*5*time.Second + time.Minute)
	for {
		done := true
		for id, c := range containers {
			out, err := d.docker("inspect", "-f", "{{json .State.Health}}", c)
			if err != nil {
				t.Fatalf("worker %s's container %.12s is gone while the master is away (replaced?): %v\n%s", id, c, err, out)
			}
			var h struct {
				Status string
				Log    []struct {
					Start    time.Time
					ExitCode int
					Output   string
				}
			}
			if err := json.Unmarshal([]byte(out), &h); err != nil {
				t.Fatalf("health of %s: %v\n%s", id, err, out)
			}
			passed := 0
			for _, p := range h.Log {
				if p.Start.Before(since) {
					continue
				}
				if p.ExitCode != 0 {
					t.Fatalf("worker %s failed a health check while the master was away (swarm replaces it): %s", id, p.Output)
				}
				passed++
			}
			done = done && passed >= n
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workers did not pass %d health checks each within %s of the master's stop", n, time.Since(since).Round(time.Second))
		}
		time.Sleep(time.Second)
	}
}

// checkRotation submits n quick tasks one after another: they run on the
// workers in rotation order from the one marked next, the same number on
// each. It returns the rotation.
func checkRotation(t *testing.T, l *lab, n int) []string {
	t.Helper()
	ws, err := l.api.Workers(l.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rotation, start := ws.IDs(), -1
	for i, w := range ws.Workers {
		if w.Next {
			start = i
		}
	}
	if start < 0 {
		t.Fatalf("no worker is marked next: %+v", ws)
	}
	count := map[string]int{}
	for i := range n {
		tk := l.waitFinal(l.submit(fmt.Sprintf("echo swarm-%d", i)).ID)
		want := rotation[(start+i)%len(rotation)]
		if tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("swarm-%d\n", i) || tk.Worker() != want {
			t.Errorf("task %d: %s on %s, stdout %q; want succeeded on %s (rotation %v)", i, tk.Status, tk.Worker(), tk.Stdout, want, rotation)
		}
		count[tk.Worker()]++
	}
	for _, id := range rotation {
		if count[id] != n/len(rotation) {
			t.Errorf("%d tasks ran %v, want %d on each of %v", n, count, n/len(rotation), rotation)
			break
		}
	}
	return rotation
}

// swarmContainer is what docker inspect shows of a swarm task's container.
type swarmContainer struct {
	Config struct {
		User   string
		Env    []string
		Labels map[string]string
	}
	HostConfig struct {
		ReadonlyRootfs bool
		CapDrop        []string
		PidsLimit      *int64
		Memory         int64
		NanoCpus       int64
		Init           *bool
		Mounts         []struct {
			Type, Target string
			TmpfsOptions *struct{ SizeBytes int64 }
		}
	}
}

// checkSwarmHardening asserts, through docker inspect, the confinement
// swarm applies from docker/stack.yaml, with compose.yaml's figures:
// non-root, read-only root filesystems, no capabilities, no token in the
// environment; workers with pids, memory and CPU limits, a 64m tmpfs /tmp
// and an init process. no-new-privileges is not among them: swarm on
// engine 20.10 cannot set it (see the README). want is how many
// containers each service runs.
func checkSwarmHardening(t *testing.T, d *deployment, want map[string]int) {
	t.Helper()
	ids, err := d.docker("ps", "-q", "--filter", "label=com.docker.stack.namespace="+d.project)
	if err != nil {
		t.Fatalf("docker ps: %v\n%s", err, ids)
	}
	out, err := d.docker(append([]string{"inspect"}, strings.Fields(ids)...)...)
	if err != nil {
		t.Fatalf("docker inspect: %v\n%s", err, out)
	}
	var cs []swarmContainer
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, c := range cs {
		svc := strings.TrimPrefix(c.Config.Labels["com.docker.swarm.service.name"], d.project+"_")
		seen[svc]++
		h := c.HostConfig
		checkConfined(t, svc, c.Config.User, h.ReadonlyRootfs, h.CapDrop)
		for _, e := range c.Config.Env {
			if k, _, _ := strings.Cut(e, "="); strings.HasSuffix(k, "_TOKEN") {
				t.Errorf("%s: %s is in the environment, want it only as a secret file", svc, k)
			}
		}
		if svc != "worker" && svc != "worker-gpu" {
			continue
		}
		if h.PidsLimit == nil || *h.PidsLimit != 256 {
			t.Errorf("%s: pids limit %v, want compose.yaml's 256", svc, h.PidsLimit)
		}
		if h.Memory != 256<<20 || h.NanoCpus != 1e9 {
			t.Errorf("%s: memory limit %d, cpus %d nano; want the defaults 256m and 1", svc, h.Memory, h.NanoCpus)
		}
		if h.Init == nil || !*h.Init {
			t.Errorf("%s: no init process to reap orphans", svc)
		}
		if !slices.ContainsFunc(h.Mounts, func(m struct {
			Type, Target string
			TmpfsOptions *struct{ SizeBytes int64 }
		}) bool {
			return m.Type == "tmpfs" && m.Target == "/tmp" && m.TmpfsOptions != nil && m.TmpfsOptions.SizeBytes == 64<<20
		}) {
			t.Errorf("%s: mounts %+v, want a 64m tmpfs at /tmp", svc, h.Mounts)
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("inspected %v, want %v", seen, want)
	}

	// The confinement as a task sees it: uid 65532, no capabilities, a
	// writable /tmp whose scripts run through sh (swarm's tmpfs is noexec),
	// nothing else writable.
	probe := `id -u; grep CapEff /proc/self/status | tr -s '\t' ' '
printf 'echo script ran\n' > probe.sh && sh probe.sh
touch /probe 2>&1 || true`
	l := d.apiLab()
	tk := l.waitFinal(l.submit(probe).ID)
	if want := "65532\nCapEff: 0000000000000000\nscript ran\ntouch: /probe: Read-only file system\n"; tk.Status != "succeeded" || tk.Stdout != want {
		t.Errorf("probe task: %s, stdout %q, stderr %q; want stdout %q", tk.Status, tk.Stdout, tk.Stderr, want)
	}
}

// The stack file is valid for the docker CLI's stack loader, with the
// settings the make targets pass: a check that needs no swarm.
func TestSwarmStackFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := &deployment{t: t, ctx: ctx, env: []string{"PATH=" + envOr("PATH", "/usr/bin:/bin"), "ROUNDHOUSE_MASTER_NODE=node1", "WORKERS=3", "GPU_WORKERS=2"}}
	out, err := d.docker("stack", "config", "-c", "docker/stack.yaml")
	if err != nil {
		t.Fatalf("docker stack config: %v\n%s", err, out)
	}
	for _, want := range []string{"replicas: 3", "replicas: 2", "node.hostname == node1", "endpoint_mode: dnsrr", "WORKER_ID: '{{.Service.Name}}.{{.Task.Slot}}'"} {
		if !strings.Contains(out, want) {
			t.Errorf("docker stack config shows no %q:\n%s", want, out)
		}
	}
	// Swarm replaces an unhealthy task: its workers are checked alive
	// (/livez), not registered, or a master's restart would kill them all.
	if !regexp.MustCompile(`- /worker\s+- healthcheck\s+- live\s`).MatchString(out) {
		t.Errorf("the stack's workers are not checked with `worker healthcheck live`:\n%s", out)
	}
}

// make swarm-up waits until the master at API lists every worker. With
// another master already there (the compose lab of make up, or make dev,
// both on port 9092 by default) the stack's master cannot publish the port,
// and the wait would count the other lab's workers: swarm-up refuses before
// it changes anything. A docker that records what it is asked to do stands
// in for the real one, make runs in a directory of its own.
func TestSwarmUpRefusesAnotherMasterOnThePort(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"ok"}`)
	}))
	defer other.Close()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir, bin := t.TempDir(), t.TempDir()
	record := filepath.Join(dir, "docker-calls")
	fake := `#!/bin/sh
echo "$*" >>"` + record + `"
case "$1 $2" in
"info -f") case "$3" in *Swarm*) echo "active true" ;; *) echo node1 ;; esac ;;
"service inspect") exit 1 ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "-f", filepath.Join(root, "Makefile"), "-o", "images", "-o", "env", "swarm-up",
		fmt.Sprintf("ROUNDHOUSE_HTTP_PORT=%d", other.Listener.Addr().(*net.TCPAddr).Port), "SWARM_STACK=rhswarmtest")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + bin + ":" + envOr("PATH", "/usr/bin:/bin"), "HOME=" + envOr("HOME", dir), "MASTER_API_TOKEN=a", "MASTER_WORKER_TOKEN=w"}
	out, err := cmd.CombinedOutput()
	calls, _ := os.ReadFile(record)
	if err == nil || strings.Contains(string(calls), "stack deploy") || !strings.Contains(string(out), "already answers") {
		t.Errorf("make swarm-up with another master on the port: %v\n%s\ndocker calls:\n%s\nwant it to refuse before deploying", err, out, calls)
	}
}

// make swarm-down waits until the stack's network is gone, not only its
// containers: docker stack rm returns at once, and a swarm-up (or swarm
// leave) that comes before the network has gone fails on it. A docker that
// records its calls stands in for the real one; its stack network lingers
// for three polls.
func TestSwarmDownWaitsForTheStacksNetwork(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir, bin := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, ".swarm"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".swarm", "created-swarm"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	record, polls := filepath.Join(dir, "docker-calls"), filepath.Join(dir, "network-polls")
	fake := `#!/bin/sh
echo "$*" >>"` + record + `"
case "$1 $2" in
"network ls")
  echo poll >>"` + polls + `"
  [ "$(wc -l <"` + polls + `")" -gt 3 ] || echo net1 ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "-f", filepath.Join(root, "Makefile"), "swarm-down", "SWARM_STACK=rhswarmtest")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + bin + ":" + envOr("PATH", "/usr/bin:/bin"), "HOME=" + envOr("HOME", dir)}
	out, err := cmd.CombinedOutput()
	raw, _ := os.ReadFile(record)
	calls := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if err != nil {
		t.Fatalf("make swarm-down: %v\n%s\ndocker calls:\n%s", err, out, raw)
	}
	lastPoll, leave := -1, -1
	for i, c := range calls {
		switch {
		case strings.HasPrefix(c, "network ls") && strings.Contains(c, "label=com.docker.stack.namespace=rhswarmtest"):
			lastPoll = i
		case strings.HasPrefix(c, "swarm leave"):
			leave = i
		}
	}
	polled, _ := os.ReadFile(polls)
	if n := strings.Count(string(polled), "poll"); n != 4 || leave < lastPoll {
		t.Errorf("swarm-down polled the stack's network %d times (want 4: until it was gone) and left the swarm at call %d, the last poll being call %d; docker calls:\n%s", n, leave, lastPoll, raw)
	}
	if strings.Contains(string(out), "still there") {
		t.Errorf("swarm-down says something is left though the network went:\n%s", out)
	}
}

// make swarm-up hands the stack the directory of its secret files as an
// absolute path, which holds a space when the checkout's path does. make
// runs in such a directory against a docker that records what stack deploy
// is given (and then fails, so that swarm-up does not wait for a master).
func TestSwarmUpSecretsInAPathWithASpace(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "a checkout")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(t.TempDir(), "secrets-dir")
	path := fakeDocker(t, `case "$1 $2" in
"info -f") case "$3" in *Swarm*) echo "active true" ;; *) echo node1 ;; esac ;;
"service inspect") exit 1 ;;
"stack deploy") printf '%s' "$ROUNDHOUSE_SECRETS" >"`+record+`"; exit 1 ;;
esac
`)
	cmd := exec.Command("make", "-s", "-f", filepath.Join(root, "Makefile"), "-o", "images", "-o", "env", "swarm-up",
		fmt.Sprintf("ROUNDHOUSE_HTTP_PORT=%d", freePort(t)), "SWARM_STACK=rhswarmspace")
	cmd.Dir = dir
	cmd.Env = []string{path, "HOME=" + envOr("HOME", dir), "MASTER_API_TOKEN=a", "MASTER_WORKER_TOKEN=w"}
	out, _ := cmd.CombinedOutput()
	got, _ := os.ReadFile(record)
	if want := filepath.Join(dir, ".swarm"); string(got) != want {
		t.Errorf("make swarm-up in %q gave stack deploy ROUNDHOUSE_SECRETS=%q, want %q\n%s", dir, got, want, out)
	}
}
