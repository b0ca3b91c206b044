package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// A worker on "another machine", as the README's Remote workers section
// sets one up: the lab runs with `make up TLS=1 REMOTE=1`'s compose files,
// and `make worker-join` starts a worker that is not on the lab's network
// and reaches the master only through the gRPC port published on the host
// (host.docker.internal, which worker-join maps to the host). It joins the
// rotation and runs tasks; a worker with the token but no client
// certificate is refused; `make worker-leave` takes it out; and the lab
// started again without the remote overlay publishes no gRPC port.
func TestComposeRemoteWorker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	tlsFiles, remoteFiles := remoteMakeWiring(t, ctx)

	// Certificates as on a lab that ran `make up TLS=1` before: then
	// `make certs MASTER_HOSTS=...` adds the name remote workers dial to
	// the master certificate, from the same CA.
	certs := filepath.Join(t.TempDir(), "certs")
	runMake(t, ctx, "certs", "ROUNDHOUSE_CERTS="+certs)
	if out := runMake(t, ctx, "certs", "ROUNDHOUSE_CERTS="+certs, "MASTER_HOSTS=host.docker.internal"); !strings.Contains(out, "wrote a new master.pem") {
		t.Fatalf("make certs MASTER_HOSTS=... on existing certificates did not reissue master.pem:\n%s", out)
	}

	// The port is published on the address host.docker.internal maps to
	// (the default bridge's gateway), not on every interface as by
	// default: a test opens nothing to the network.
	image := os.Getenv("WORKER_IMAGE")
	if image == "" {
		image = "roundhouse/worker:dev"
	}
	gateway := hostGateway(t, ctx, image)
	grpcPort := freePort(t)
	workerToken := randomToken(t)
	tokenFile := filepath.Join(t.TempDir(), "worker-token")
	if err := os.WriteFile(tokenFile, []byte(workerToken+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"ROUNDHOUSE_CERTS=" + certs, "ROUNDHOUSE_GRPC_BIND=" + gateway,
		fmt.Sprintf("ROUNDHOUSE_GRPC_PORT=%d", grpcPort),
		// startCompose's own worker token is overridden (the last one
		// wins): the remote worker needs it.
		"MASTER_WORKER_TOKEN=" + workerToken}
	cl := startCompose(t, ctx, remoteFiles, 1, env...)
	api := cl.api
	published := net.JoinHostPort(gateway, strconv.Itoa(grpcPort))
	if out, err := cl.compose("port", "master", "50051"); err != nil || strings.TrimSpace(out) != published {
		t.Fatalf("compose port master 50051: %q, %v; want %s", out, err, published)
	}

	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	if _, err := api.WaitWorkers(wctx, 1); err != nil {
		t.Fatal(err)
	}
	suffix := strconv.FormatInt(time.Now().UnixNano()%1_000_000, 10)
	remote, byIP := "rhremote-"+suffix, "rhremote-ip-"+suffix
	master := fmt.Sprintf("host.docker.internal:%d", grpcPort)
	join := []string{"ROUNDHOUSE_CERTS=" + certs, "WORKER_TOKEN_FILE=" + tokenFile}
	removeOnCleanup(t, "roundhouse-remote-"+remote)
	runMake(t, ctx, append([]string{"worker-join", "MASTER=" + master, "WORKER_ID=" + remote}, join...)...)
	// The alternative to MASTER_HOSTS: an address the certificate does not
	// carry, with the name it does.
	removeOnCleanup(t, "roundhouse-remote-"+byIP)
	runMake(t, ctx, append([]string{"worker-join", "MASTER=" + published, "WORKER_ID=" + byIP, "WORKER_TLS_SERVER_NAME=master"}, join...)...)
	checkRemoteContainer(t, ctx, "roundhouse-remote-"+remote)

	ws, err := api.WaitWorkers(wctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Has(remote) || !ws.Has(byIP) {
		t.Fatalf("workers %v, want %s and %s among them", ws.IDs(), remote, byIP)
	}
	rotation := ws.IDs()
	for i := range 3 {
		tk, err := api.Submit(ctx, fmt.Sprintf("echo remote-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if tk, err = api.WaitFinal(wctx, tk.ID); err != nil {
			t.Fatal(err)
		}
		if tk.Status != "succeeded" || tk.Stdout != fmt.Sprintf("remote-%d\n", i) || tk.Worker() != rotation[i] {
			t.Errorf("task %d: %s on %s, stdout %q; want succeeded on %s", i, tk.Status, tk.Worker(), tk.Stdout, rotation[i])
		}
	}

	// The right token without a client certificate: the master refuses
	// the TLS handshake, and the worker never enters the rotation.
	noCert := "rhremote-nocert-" + suffix
	removeOnCleanup(t, noCert)
	if out, err := exec.CommandContext(ctx, "docker", "run", "-d", "--name", noCert,
		"--add-host", "host.docker.internal:host-gateway", "--read-only", "--cap-drop", "ALL",
		"-e", "WORKER_MASTER_ADDR="+master, "-e", "WORKER_ID="+noCert, "-e", "WORKER_TOKEN="+workerToken,
		"-e", "WORKER_RECONNECT_MAX=500ms", "-e", "WORKER_TLS_CA=/certs/ca.pem",
		"-v", filepath.Join(certs, "ca.pem")+":/certs/ca.pem:ro", image).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	refused := regexp.MustCompile(`TLS handshake with the master failed.*certificate required.*`)
	var line string
	err = client.Poll(wctx, 500*time.Millisecond, func() (bool, error) {
		out, err := exec.CommandContext(ctx, "docker", "logs", noCert).CombinedOutput()
		line = refused.FindString(string(out))
		return line != "", err
	})
	if err != nil {
		out, _ := exec.Command("docker", "logs", noCert).CombinedOutput()
		t.Fatalf("the worker without a client certificate never logged a refused handshake: %v\n%s", err, out)
	}
	t.Logf("%s: %s", noCert, line)
	if ws, err := api.Workers(ctx); err != nil || ws.Has(noCert) || len(ws.IDs()) != 3 {
		t.Errorf("workers %v (%v), want the 3 trusted ones only", ws.IDs(), err)
	}

	// make worker-leave: the container is gone, and the worker says
	// goodbye to the master as it drains, leaving the rotation.
	runMake(t, ctx, "worker-leave", "WORKER_ID="+remote)
	if exec.CommandContext(ctx, "docker", "container", "inspect", "roundhouse-remote-"+remote).Run() == nil {
		t.Errorf("roundhouse-remote-%s still exists after make worker-leave", remote)
	}
	if err := client.Poll(wctx, 200*time.Millisecond, func() (bool, error) {
		ws, err := api.Workers(ctx)
		return err == nil && !ws.Has(remote), err
	}); err != nil {
		t.Errorf("%s still in the rotation after make worker-leave: %v", remote, err)
	}

	// The gRPC port answers from the host now; started again without the
	// remote overlay, as `make up TLS=1` does, the master publishes only
	// its API.
	if c, err := net.DialTimeout("tcp", published, 5*time.Second); err != nil {
		t.Errorf("dial %s with the remote overlay: %v", published, err)
	} else {
		c.Close()
	}
	recompose := func(files []string, args ...string) string {
		cl.files = files // the same project, other files
		out, err := cl.compose(args...)
		if err != nil {
			t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	recompose(tlsFiles, "up", "-d", "--scale", "worker=1")
	id := strings.TrimSpace(recompose(tlsFiles, "ps", "-q", "master"))
	out, err := exec.CommandContext(ctx, "docker", "port", id).CombinedOutput()
	if err != nil {
		t.Fatalf("docker port: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "50051") || !strings.Contains(string(out), "9092/tcp") {
		t.Errorf("without REMOTE the master publishes\n%s\nwant its API (9092) only", out)
	}
	if c, err := net.DialTimeout("tcp", published, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("%s still answers without the remote overlay", published)
	}
}

// remoteMakeWiring checks what make does with TLS and REMOTE, without
// running it, and returns the compose files of `make up TLS=1` and of
// `make up TLS=1 REMOTE=1`: REMOTE alone is refused, and only REMOTE adds
// the overlay that publishes the gRPC port.
func remoteMakeWiring(t *testing.T, ctx context.Context) (tlsFiles, remoteFiles []string) {
	t.Helper()
	out, err := makeCmd(ctx, "-n", "up", "REMOTE=1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "REMOTE=1 publishes the master's gRPC port to other machines and needs TLS=1") {
		t.Errorf("make up REMOTE=1 without TLS=1: %v\n%s\nwant a refusal that asks for TLS=1", err, out)
	}
	files := func(args ...string) []string {
		out := runMake(t, ctx, append([]string{"-n", "-s", "up"}, args...)...)
		up := regexp.MustCompile(`(?m)^.*compose( -f \S+)+ +up -d.*$`).FindString(out)
		var fs []string
		for _, m := range regexp.MustCompile(`-f (\S+)`).FindAllStringSubmatch(up, -1) {
			fs = append(fs, m[1])
		}
		return fs
	}
	plain, tlsFiles, remoteFiles := files(), files("TLS=1"), files("TLS=1", "REMOTE=1")
	if plain != nil || !slices.Equal(tlsFiles, []string{"compose.yaml", "docker/compose.tls.yaml"}) ||
		!slices.Equal(remoteFiles, []string{"compose.yaml", "docker/compose.tls.yaml", "docker/compose.remote.yaml"}) {
		t.Fatalf("make up runs compose with %v, TLS=1 with %v, TLS=1 REMOTE=1 with %v", plain, tlsFiles, remoteFiles)
	}
	return tlsFiles, remoteFiles
}

// makeCmd is make in the repository root.
func makeCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Dir = ".."
	return cmd
}

// runMake runs make, logs what it said and fails the test if it failed.
func runMake(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := makeCmd(ctx, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[0] != "-n" {
		t.Logf("$ make %s\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

// hostGateway is the address host.docker.internal has in a container
// started with --add-host host.docker.internal:host-gateway, as make
// worker-join starts its worker: this machine on Docker's default bridge.
func hostGateway(t *testing.T, ctx context.Context, image string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway",
		"--entrypoint", "cat", image, "/etc/hosts").CombinedOutput()
	if err != nil {
		t.Fatalf("docker run %s cat /etc/hosts: %v\n%s", image, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "host.docker.internal" && net.ParseIP(f[0]) != nil {
			return f[0]
		}
	}
	t.Fatalf("host.docker.internal is not in the container's /etc/hosts:\n%s", out)
	return ""
}

// removeOnCleanup removes container name at the end of the test, if it
// is still there, with its logs if the test failed.
func removeOnCleanup(t *testing.T, name string) {
	t.Cleanup(func() {
		if exec.Command("docker", "container", "inspect", name).Run() != nil {
			return
		}
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", name).CombinedOutput()
			t.Logf("---- %s ----\n%s", name, out)
		}
		if out, err := exec.Command("docker", "rm", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("docker rm -f %s: %v\n%s", name, err, out)
		}
	})
}

// checkRemoteContainer asserts what docker inspect shows of a worker
// make worker-join started: the hardening of compose.yaml's workers, on
// Docker's default bridge (not the lab's network), with only the CA, the
// worker certificate and key, and the token file mounted, read-only, and
// the token not in its environment.
func checkRemoteContainer(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "inspect", name).Output()
	if err != nil {
		t.Fatalf("docker inspect %s: %v", name, err)
	}
	var hs []hardening
	var cs []struct {
		Config struct{ Env []string }
		Mounts []struct {
			Source, Destination string
			RW                  bool
		}
		NetworkSettings struct{ Networks map[string]json.RawMessage }
	}
	if err := json.Unmarshal(out, &hs); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &cs); err != nil {
		t.Fatal(err)
	}
	h, c := hs[0].HostConfig, cs[0]
	if u := strings.Split(hs[0].Config.User, ":")[0]; u == "" || u == "0" || u == "root" {
		t.Errorf("%s runs as user %q, want non-root", name, hs[0].Config.User)
	}
	if !h.ReadonlyRootfs || !slices.Equal(h.CapDrop, []string{"ALL"}) || !slices.Contains(h.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("%s: read-only %v, cap_drop %v, security_opt %v; want read-only, [ALL], no-new-privileges", name, h.ReadonlyRootfs, h.CapDrop, h.SecurityOpt)
	}
	if h.PidsLimit == nil || *h.PidsLimit != 256 || h.Memory != 256<<20 || h.NanoCpus != 1e9 || h.Init == nil || !*h.Init {
		t.Errorf("%s: pids %v, memory %d, cpus %d nano, init %v; want 256, 256m, 1, an init", name, h.PidsLimit, h.Memory, h.NanoCpus, h.Init)
	}
	if opts := h.Tmpfs["/tmp"]; !strings.Contains(opts, "size=64m") || !strings.Contains(opts, "exec") {
		t.Errorf("%s: tmpfs /tmp %q, want an executable 64m tmpfs", name, opts)
	}
	if nets := slices.Sorted(maps.Keys(c.NetworkSettings.Networks)); !slices.Equal(nets, []string{"bridge"}) {
		t.Errorf("%s is on networks %v, want Docker's default bridge only", name, nets)
	}
	var dests []string
	for _, m := range c.Mounts {
		dests = append(dests, m.Destination)
		if m.RW || strings.HasSuffix(m.Source, "ca-key.pem") {
			t.Errorf("%s mounts %s at %s (writable %v)", name, m.Source, m.Destination, m.RW)
		}
	}
	slices.Sort(dests)
	if want := []string{"/certs/ca.pem", "/certs/worker-key.pem", "/certs/worker.pem", "/run/secrets/worker_token"}; !slices.Equal(dests, want) {
		t.Errorf("%s mounts %v, want %v", name, dests, want)
	}
	for _, e := range c.Config.Env {
		if strings.HasPrefix(e, "WORKER_TOKEN=") {
			t.Errorf("%s has WORKER_TOKEN in its environment; worker-join mounts WORKER_TOKEN_FILE", name)
		}
	}
}

// make worker-join takes the worker token from .env, when neither
// WORKER_TOKEN_FILE nor MASTER_WORKER_TOKEN is given, as compose and the
// Makefile read .env: the last line that sets it, with or without `export `
// and quotes (the README's rotation appends a new token, and a token in
// quotes is the same token to compose). make runs in a directory of its
// own, with .env, certs/ and docker/; a docker that records the token the
// worker gets stands in for the real one.
func TestWorkerJoinTakesTheTokenOfDotEnv(t *testing.T) {
	const token = "dotenv-worker-token-0123456789"
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	env := environWithout("PATH", "MASTER_WORKER_TOKEN", "WORKER_TOKEN_FILE", "ROUNDHOUSE_CERTS", "WORKER_ID", "JOIN_WAIT")
	for _, tt := range dotenvSpellings("MASTER_WORKER_TOKEN", token, "MASTER_API_TOKEN") {
		t.Run(tt.name, func(t *testing.T) {
			dir := checkoutWithDotenv(t, root, tt.dotenv+"\n")
			if err := os.Mkdir(filepath.Join(dir, "certs"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"ca.pem", "worker.pem", "worker-key.pem"} {
				if err := os.WriteFile(filepath.Join(dir, "certs", f), []byte("not checked here\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			record := filepath.Join(dir, "worker-token")
			path := fakeDocker(t, `case "$1" in
run) printf '%s' "$WORKER_TOKEN" >"`+record+`" ;;
container) exit 1 ;; # no such container yet
esac
`)
			cmd := exec.Command("make", "-s", "-f", filepath.Join(root, "Makefile"), "worker-join", "MASTER=lab.example:50051")
			cmd.Dir, cmd.Env = dir, append(env, path, "WORKER_ID=rhjoin", "JOIN_WAIT=0")
			out, err := cmd.CombinedOutput()
			got, _ := os.ReadFile(record)
			if err != nil || string(got) != token {
				t.Errorf("make worker-join with .env %q: %v\n%s\nthe worker got WORKER_TOKEN %q, want %q", tt.dotenv, err, out, got, token)
			}
		})
	}
}
