package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
)

// composeCLI is the compose command: $COMPOSE if set (the Makefile sets it),
// else the v2 plugin if the docker CLI has it, else the v1 binary.
func composeCLI() []string {
	if c := strings.Fields(os.Getenv("COMPOSE")); len(c) > 0 {
		return c
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	return []string{"docker-compose"}
}

// The real compose.yaml, scaled to five workers: all five register under
// their compose names and tasks run round-robin across them.
func TestComposeScaleFive(t *testing.T) {
	// Cleanups run after the test function returns: the context they use
	// must outlive it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	port := freePort(t)
	project := fmt.Sprintf("rhtest%d", time.Now().UnixNano()%1_000_000)
	compose := func(args ...string) (string, error) {
		cli := composeCLI()
		cmd := exec.CommandContext(ctx, cli[0], append(append(cli[1:], "-p", project, "-f", "compose.yaml"), args...)...)
		cmd.Dir = ".." // the repository root
		cmd.Env = append(os.Environ(), fmt.Sprintf("ROUNDHOUSE_HTTP_PORT=%d", port))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose("logs", "--no-color")
			t.Logf("---- compose logs ----\n%s", out)
		}
		if out, err := compose("down", "--volumes", "--remove-orphans"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	if out, err := compose("up", "-d", "--scale", "worker=5"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}

	api := client.New(fmt.Sprintf("http://127.0.0.1:%d", port))
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
