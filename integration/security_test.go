package integration

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// forkBombPids is the worker's pids limit in the fork-bomb test: small, so
// the bomb reaches it at once, and above what the worker itself needs.
const forkBombPids = 64

// confined gives a worker container what compose.yaml gives every worker:
// pids and memory limits, a read-only image with a tmpfs /tmp, no
// capabilities, no privilege gain, an init that reaps orphans, and a
// restart policy.
func confined(pids, memory int64) workerOption {
	return withWorkerHostConfig(func(h *container.HostConfig) {
		h.PidsLimit = &pids
		h.Memory = memory
		h.ReadonlyRootfs = true
		h.Tmpfs = map[string]string{"/tmp": "rw,exec,nosuid,nodev,mode=1777,size=16m"}
		h.CapDrop = []string{"ALL"}
		h.SecurityOpt = []string{"no-new-privileges:true"}
		init := true
		h.Init = &init
		h.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyUnlessStopped}
	})
}

// A fork bomb in a task is contained by the worker container's pids limit:
// the host keeps its process table, the master keeps serving, the bomb's
// task ends in a recorded final state, and the worker is back in the
// rotation running the next task. Busybox sh runs the builtin ':' before a
// function of that name, so the classic :(){ :|:& };: is spelled bomb.
func TestForkBombIsContained(t *testing.T) {
	l := newLab(t)
	w := l.startWorker("bomber", 1, confined(forkBombPids, 128<<20))

	tests := []struct {
		name string
		cmd  string
		// want is the bomb task's final status.
		want []string
		loud bool // the bomb's shells report failed forks on stderr
	}{
		{
			// The shell waits while the bomb grows: the timeout kills its
			// whole process group. Should the worker itself fail to get a
			// thread and die, its delivery is lost and, with max_attempts
			// 1, the task fails.
			name: "held by its shell until the timeout",
			cmd:  "bomb(){ bomb|bomb& }; bomb; sleep 60",
			want: []string{"timed_out", "failed"},
			loud: true,
		},
		{
			// The classic: the shell returns at once and leaves the bomb
			// behind, silent so that no write to a closed pipe ends it.
			// Its orphans are re-parented to the container's init, which
			// reaps them.
			name: "left behind by its shell",
			cmd:  "exec >/dev/null 2>&1; bomb(){ bomb|bomb& }; bomb",
			want: []string{"succeeded", "timed_out", "failed"},
		},
	}
	// One after another on the same worker, without t.Run: the lab's
	// helpers fail the test that made the lab.
	for _, tt := range tests {
		func() {
			t.Logf("---- fork bomb %s ----", tt.name)
			bomb, _, err := l.api.SubmitWith(l.ctx, client.Submit{Cmd: tt.cmd, Timeout: "5s", MaxAttempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			l.watch(bomb.ID)
			bomb = l.waitFinal(bomb.ID)
			if !slices.Contains(tt.want, bomb.Status) {
				t.Errorf("%s: bomb task %s, want one of %v (error %q)", tt.name, bomb.Status, tt.want, deref(bomb.Error))
			}
			t.Logf("bomb task: %s, error %v, worker %s", bomb.Status, deref(bomb.Error), bomb.Worker())
			// What stopped it was the pids limit: the shells said so, unless
			// they were silenced or died with their worker.
			if tt.loud && bomb.Status == "timed_out" && !strings.Contains(bomb.Stderr, "can't fork") {
				t.Errorf("%s: the bomb never hit the pids limit; stderr %q", tt.name, bomb.Stderr)
			}
			l.expectServing()

			// The worker recovers: within a minute it is in the rotation
			// and runs a task to success. Tasks submitted while the bomb
			// still holds every pid fail to start; that is the limit
			// working, and they are counted, not hidden.
			ctx, cancel := context.WithTimeout(l.ctx, time.Minute)
			defer cancel()
			failedStarts := 0
			err = client.Poll(ctx, 500*time.Millisecond, func() (bool, error) {
				ws, err := l.api.Workers(ctx)
				if err != nil || !ws.Has("bomber") {
					return false, nil
				}
				tk, _, err := l.api.SubmitWith(ctx, client.Submit{Cmd: "echo alive", Timeout: "10s", MaxAttempts: 1, Wait: 20 * time.Second})
				if err != nil {
					return false, err
				}
				if !tk.Final() {
					tk = l.waitFinal(tk.ID)
				}
				if tk.Status == "succeeded" && tk.Stdout == "alive\n" && tk.Worker() == "bomber" {
					return true, nil
				}
				failedStarts++
				return false, nil
			})
			if err != nil {
				t.Fatalf("%s: the worker did not run a task after the bomb: %v", tt.name, err)
			}
			restarts := l.docker("inspect", "-f", "{{.RestartCount}}", w.GetContainerID())
			t.Logf("worker recovered: %d tasks failed to start meanwhile, container restarts: %s", failedStarts, restarts)
			l.expectServing()
		}()
	}
}

// expectServing fails the test unless the master answers /healthz and
// GET /workers.
func (l *lab) expectServing() {
	l.t.Helper()
	resp, err := l.api.HTTP.Get(l.api.Base + "/healthz")
	if err != nil {
		l.t.Fatalf("master /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.t.Fatalf("master /healthz: %s", resp.Status)
	}
	if _, err := l.api.Workers(l.ctx); err != nil {
		l.t.Fatalf("master GET /workers: %v", err)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// makeCerts writes a CA named caName and its master and worker
// certificates into a temporary directory with the certs tool, keys
// readable by all: the containers run as uid 65532.
func makeCerts(t *testing.T, caName string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "run", "./cmd/certs", "-out", dir, "-key-mode", "0644", "-ca-name", caName).CombinedOutput()
	if err != nil {
		t.Fatalf("certs tool: %v\n%s", err, out)
	}
	return dir
}

// certFiles copies files of dir to /certs in a container.
func certFiles(dir string, names ...string) []testcontainers.ContainerFile {
	var fs []testcontainers.ContainerFile
	for _, n := range names {
		fs = append(fs, testcontainers.ContainerFile{HostFilePath: filepath.Join(dir, n), ContainerFilePath: "/certs/" + n, FileMode: 0o644})
	}
	return fs
}

// tlsWorker makes a worker trust the CA in caDir and, unless certDir is
// empty, present the worker certificate in certDir.
func tlsWorker(caDir, certDir string) []workerOption {
	opts := []workerOption{
		withWorkerFiles(certFiles(caDir, "ca.pem")...),
		withWorkerEnv("WORKER_TLS_CA", "/certs/ca.pem"),
	}
	if certDir != "" {
		opts = append(opts,
			withWorkerFiles(certFiles(certDir, "worker.pem", "worker-key.pem")...),
			withWorkerEnv("WORKER_TLS_CERT", "/certs/worker.pem"),
			withWorkerEnv("WORKER_TLS_KEY", "/certs/worker-key.pem"))
	}
	return opts
}

// Who may talk to the master, as docker/compose.tls.yaml sets it up: REST
// callers with the API token, and workers with the worker token and a
// client certificate from the lab's CA. Everyone else is refused, says so
// in its log, and never enters the rotation.
func TestOnlyTrustedWorkersAndCallers(t *testing.T) {
	// The rogue CA even has the lab CA's name, so that a worker's TLS
	// stack offers its certificate and the master must check the
	// signature, not the issuer's name.
	labCA := makeCerts(t, "Roundhouse lab CA")
	otherCA := makeCerts(t, "Roundhouse lab CA")
	apiToken, workerToken := randomToken(t), randomToken(t)
	l := newLab(t, withTokens(apiToken, workerToken),
		withMasterEnv("MASTER_TLS_CERT", "/certs/master.pem"),
		withMasterEnv("MASTER_TLS_KEY", "/certs/master-key.pem"),
		withMasterEnv("MASTER_TLS_CLIENT_CA", "/certs/ca.pem"),
		withMasterFiles(certFiles(labCA, "ca.pem", "master.pem", "master-key.pem")...),
	)

	// REST: the probes stay open, everything else wants the token. The
	// readiness probe is checked here only: startCompose probes before the
	// master need be ready.
	checkAPIAuth(t, l.api.Base, apiToken)
	if got := getStatus(t, l.api.Base+"/readyz", ""); got != http.StatusOK {
		t.Errorf("GET /readyz without a token: %d, want %d", got, http.StatusOK)
	}
	tk, err := client.New(l.api.Base).Submit(l.ctx, "echo not authorized")
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("POST /tasks without a token: task %q, err %v; want a 401", tk.ID, err)
	}

	l.startWorker("trusted", 1, tlsWorker(labCA, labCA)...)

	refused := []struct {
		id   string
		opts []workerOption
		log  *regexp.Regexp // what the refused worker logs
	}{
		{
			id:   "other-ca",
			opts: tlsWorker(labCA, otherCA),
			log:  regexp.MustCompile(`TLS handshake with the master failed.*(unknown certificate authority|bad certificate).*`),
		},
		{
			id:   "no-cert",
			opts: tlsWorker(labCA, ""),
			log:  regexp.MustCompile(`TLS handshake with the master failed.*certificate required.*`),
		},
		{
			id:   "no-token",
			opts: append(tlsWorker(labCA, labCA), withoutWorkerEnv("WORKER_TOKEN")),
			log:  regexp.MustCompile(`master refused the worker token.*`),
		},
		{
			id:   "wrong-token",
			opts: append(tlsWorker(labCA, labCA), withWorkerEnv("WORKER_TOKEN", workerToken[1:])),
			log:  regexp.MustCompile(`master refused the worker token.*`),
		},
	}
	for _, r := range refused {
		l.startWorker(r.id, 1, append(r.opts, refusedWorker())...)
	}
	for _, r := range refused {
		t.Logf("%s: %s", r.id, l.waitLog(r.id, r.log))
	}
	// Each has been refused at least once by now; the master lists only
	// the trusted worker, which runs every task.
	ws, err := l.api.Workers(l.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ids := ws.IDs(); !slices.Equal(ids, []string{"trusted"}) {
		t.Errorf("workers %v, want only [trusted]", ids)
	}
	for i := range 3 {
		tk := l.submit(fmt.Sprintf("echo over mTLS %d", i))
		l.watch(tk.ID)
		tk = l.waitFinal(tk.ID)
		if tk.Status != "succeeded" || tk.Worker() != "trusted" || tk.Stdout != fmt.Sprintf("over mTLS %d\n", i) {
			t.Errorf("task %d: %s on %s, stdout %q; want succeeded on trusted", i, tk.Status, tk.Worker(), tk.Stdout)
		}
	}
}
