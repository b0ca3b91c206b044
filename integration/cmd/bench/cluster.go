package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
)

// node is one running master or worker.
type node struct {
	name string
	pid  int          // on this host, for /proc/<pid>/status
	kill func() error // SIGKILL, no goodbye
	stop func() error // end it and wait; after kill it only reaps
	api  string       // masters: the REST base URL
	grpc string       // masters: the address workers dial
	// local is a process master's cluster, which its workers join; nil
	// for a container.
	local *localcluster.Cluster
}

// launcher starts masters and workers: as local processes, or as the
// project's containers.
type launcher interface {
	master(ctx context.Context) (*node, error)
	worker(ctx context.Context, m *node, id string) (*node, error)
	close()
}

// processes runs the master and worker binaries on loopback, each master
// a localcluster of its own with a fresh database in a temporary directory
// and the default (durable) SQLite settings.
type processes struct {
	dir      string // built binaries and a directory of logs per master; removed by close
	bin      localcluster.Binaries
	clusters []*localcluster.Cluster // every one started, closed by close
}

func newProcesses(ctx context.Context, masterBin, workerBin string) (*processes, error) {
	dir, err := os.MkdirTemp("", "roundhouse-bench-")
	if err != nil {
		return nil, err
	}
	p := &processes{dir: dir, bin: localcluster.Binaries{Master: masterBin, Worker: workerBin}}
	for _, b := range []struct {
		bin *string
		pkg string
	}{{&p.bin.Master, "master"}, {&p.bin.Worker, "worker"}} {
		if *b.bin != "" {
			continue
		}
		*b.bin = filepath.Join(dir, b.pkg)
		if err := localcluster.GoBuild(ctx, *b.bin, "github.com/roundhouse-lab/roundhouse/"+b.pkg); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	return p, nil
}

func (p *processes) close() {
	for _, c := range p.clusters {
		_ = c.Close() // a second Close does nothing
	}
	os.RemoveAll(p.dir)
}

// benchMasterEnv is the master's settings on top of its defaults: room for
// the million-task backlog, and no API token (empty is unset), whatever a
// developer's environment or .env holds, since the load generator sends none.
// A local process also gets the rest of localcluster's settings (no worker
// token, no TLS); a container inherits nothing.
var benchMasterEnv = []string{"MASTER_MAX_QUEUED=2000000", "MASTER_API_TOKEN="}

func (p *processes) master(ctx context.Context) (*node, error) {
	// Each process logs into a file of its own, as the floor's do: output
	// piped through the bench would cost it CPU per line (four per task)
	// on the cores the cluster is measured on.
	logs := filepath.Join(p.dir, fmt.Sprintf("cluster-%d", len(p.clusters)+1))
	if err := os.Mkdir(logs, 0o755); err != nil {
		return nil, err
	}
	c, err := localcluster.Start(ctx, localcluster.Config{Bin: p.bin, MasterEnv: benchMasterEnv, LogDir: logs, StopTimeout: 15 * time.Second})
	if err != nil {
		return nil, err
	}
	p.clusters = append(p.clusters, c)
	m := c.Master()
	return &node{
		name: "master", pid: m.Pid(), kill: m.Kill,
		// The whole cluster: workers still running stop first.
		stop: c.Close,
		api:  c.API, grpc: c.GRPCAddr, local: c,
	}, nil
}

// emptyDatabase has the master make its database at path (its schema and
// indexes, no task) and stop, for the row handler.
func (p *processes) emptyDatabase(ctx context.Context, path string) error {
	c, err := localcluster.Start(ctx, localcluster.Config{Bin: p.bin, MasterEnv: benchMasterEnv, DBPath: path, StopTimeout: 15 * time.Second})
	if err != nil {
		return fmt.Errorf("a master's empty database: %w", err)
	}
	return c.Close()
}

func (p *processes) worker(ctx context.Context, m *node, id string) (*node, error) {
	w, err := m.local.StartWorker(ctx, localcluster.Worker{ID: id})
	if err != nil {
		return nil, err
	}
	return &node{name: w.Name, pid: w.Pid(), kill: w.Kill, stop: w.Stop}, nil
}

// containers runs the project's images on a Docker network of their own;
// the master's REST port is published on loopback only.
type containers struct {
	masterImage, workerImage string
	network                  string
	names                    []string // every container started, removed by close
}

func newContainers(ctx context.Context, masterImage, workerImage string, build bool) (*containers, error) {
	if build {
		cmd := exec.CommandContext(ctx, "bash", "docker/images.sh")
		cmd.Env = append(os.Environ(), "MASTER_IMAGE="+masterImage, "WORKER_IMAGE="+workerImage)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building images (run make bench from the repository top): %w", err)
		}
	}
	c := &containers{masterImage: masterImage, workerImage: workerImage, network: "roundhouse-bench-" + randHex()}
	if _, err := docker(ctx, "network", "create", c.network); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *containers) close() {
	ctx := context.Background()
	if len(c.names) > 0 {
		_, _ = docker(ctx, append([]string{"rm", "-f", "-v"}, c.names...)...)
	}
	_, _ = docker(ctx, "network", "rm", c.network)
}

func (c *containers) run(ctx context.Context, name string, args ...string) (*node, error) {
	full := append([]string{"run", "-d", "--name", name, "--network", c.network, "--network-alias", name}, args...)
	if _, err := docker(ctx, full...); err != nil {
		return nil, err
	}
	c.names = append(c.names, name)
	out, err := docker(ctx, "inspect", "-f", "{{.State.Pid}}", name)
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(out)
	if err != nil {
		return nil, fmt.Errorf("pid of %s: %q", name, out)
	}
	bg := context.Background()
	return &node{
		name: name,
		pid:  pid,
		kill: func() error { _, err := docker(bg, "kill", "-s", "KILL", name); return err },
		stop: func() error { _, err := docker(bg, "rm", "-f", "-v", name); return err },
	}, nil
}

func (c *containers) master(ctx context.Context) (*node, error) {
	name := "bench-master-" + randHex()
	args := []string{"-p", "127.0.0.1::9092"}
	for _, kv := range benchMasterEnv {
		args = append(args, "-e", kv)
	}
	n, err := c.run(ctx, name, append(args, c.masterImage)...)
	if err != nil {
		return nil, err
	}
	out, err := docker(ctx, "port", name, "9092/tcp")
	if err != nil {
		return nil, err
	}
	n.api, n.grpc = "http://"+strings.Fields(out)[0], name+":50051"
	if err := waitReady(ctx, n.api); err != nil {
		return nil, err
	}
	return n, nil
}

func (c *containers) worker(ctx context.Context, m *node, id string) (*node, error) {
	return c.run(ctx, "bench-worker-"+id+"-"+randHex(), "-e", "WORKER_ID="+id, "-e", "WORKER_MASTER_ADDR="+m.grpc, c.workerImage)
}

func docker(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func randHex() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitReady polls /readyz until the master answers 200.
func waitReady(ctx context.Context, api string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	err := client.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		resp, err := hc.Get(api + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("master at %s not ready: %w", api, err)
	}
	return nil
}

// startWorkers starts workers w1..wn and waits until all are connected.
func startWorkers(ctx context.Context, l launcher, m *node, n int) (map[string]*node, error) {
	ws := map[string]*node{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("w%d", i)
		w, err := l.worker(ctx, m, id)
		if err != nil {
			return ws, err
		}
		ws[id] = w
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := client.New(m.api).WaitWorkers(wctx, n)
	return ws, err
}

// rssMiB reads a process's resident set size from /proc.
func rssMiB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuTime is a process's CPU time so far: its own (user + system), and that
// of its children it has waited for (the commands a worker ran).
type cpuTime struct{ self, children time.Duration }

// readCPU reads /proc/<pid>/stat.
func readCPU(pid int) (cpuTime, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTime{}, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is the first; utime, stime, cutime and cstime are
	// fields 14 to 17 of the whole line.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 15 {
		return cpuTime{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var ticks [4]float64
	for i := range ticks {
		if ticks[i], err = strconv.ParseFloat(f[11+i], 64); err != nil {
			return cpuTime{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	const hz = 100 // USER_HZ, fixed on Linux
	tick := func(v float64) time.Duration { return time.Duration(v * float64(time.Second) / hz) }
	return cpuTime{self: tick(ticks[0] + ticks[1]), children: tick(ticks[2] + ticks[3])}, nil
}
