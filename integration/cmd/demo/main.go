// Command demo shows the round-robin at a glance: it submits a batch of
// tasks, one after another, and prints which worker ran each.
//
// With -api it uses a running master (the compose lab). Otherwise it starts
// its own cluster of local processes from the -master and -worker binaries,
// workers w1..wN registered in that order, and stops it at the end.
//
//	go run ./integration/cmd/demo -master bin/master -worker bin/worker -workers 3
//	go run ./integration/cmd/demo -api http://127.0.0.1:9092
//	go run ./integration/cmd/demo -api http://127.0.0.1:9092 -wait-workers 5 -tasks 0
//
// -token (default $MASTER_API_TOKEN) is sent as the API's bearer token; the
// local cluster's master is started with it as its MASTER_API_TOKEN. The
// local cluster runs without a worker token and without TLS, whatever the
// caller's environment holds for the compose lab.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localenv"
)

type options struct {
	api         string
	token       string // the REST API's bearer token; empty sends none
	masterBin   string
	workerBin   string
	workers     int
	waitWorkers int
	tasks       int
	timeout     time.Duration
	procLog     io.Writer // the local cluster's own output
}

func main() {
	o := options{procLog: os.Stderr}
	flag.StringVar(&o.api, "api", "", "URL of a running master; empty starts a local cluster")
	flag.StringVar(&o.masterBin, "master", "bin/master", "master binary for the local cluster")
	flag.StringVar(&o.workerBin, "worker", "bin/worker", "worker binary for the local cluster")
	flag.StringVar(&o.token, "token", os.Getenv("MASTER_API_TOKEN"), "bearer token for the REST API (default $MASTER_API_TOKEN)")
	flag.IntVar(&o.workers, "workers", 3, "workers in the local cluster")
	flag.IntVar(&o.waitWorkers, "wait-workers", 0, "with -api: wait until this many workers are connected")
	flag.IntVar(&o.tasks, "tasks", 12, "tasks to run")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run does the demo and returns, per task in submission order, the worker that ran it.
func run(ctx context.Context, o options, out io.Writer) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	api := o.api
	if api == "" {
		c, err := startCluster(ctx, o)
		if err != nil {
			return nil, err
		}
		defer c.stop()
		api = c.api
		o.waitWorkers = o.workers
	}
	cl := client.New(api, client.WithToken(o.token))
	var ws client.Workers
	var err error
	if o.waitWorkers > 0 {
		ws, err = cl.WaitWorkers(ctx, o.waitWorkers)
	} else {
		ws, err = cl.Workers(ctx)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "master %s, %d workers in rotation: %s\n", api, ws.WorkerCount, strings.Join(ws.IDs(), " -> "))
	if o.tasks == 0 {
		return nil, nil
	}

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tWORKER\tSTATUS\tOUTPUT")
	var ran []string
	count := map[string]int{}
	for i := 1; i <= o.tasks; i++ {
		t, err := cl.Submit(ctx, fmt.Sprintf("echo task %d", i))
		if err != nil {
			return ran, err
		}
		if t, err = cl.WaitFinal(ctx, t.ID); err != nil {
			return ran, err
		}
		ran = append(ran, t.Worker())
		count[t.Worker()]++
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", i, t.Worker(), t.Status, strings.TrimSpace(t.Stdout))
	}
	tw.Flush()
	fmt.Fprint(out, "tasks per worker:")
	for _, id := range ws.IDs() {
		fmt.Fprintf(out, " %s=%d", id, count[id])
	}
	fmt.Fprintln(out)
	return ran, nil
}

// cluster is a master and workers run as local processes, owned by run.
type cluster struct {
	api   string
	dir   string // the master's database, removed at stop
	procs []*exec.Cmd
}

func startCluster(ctx context.Context, o options) (*cluster, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "roundhouse-demo-")
	if err != nil {
		return nil, err
	}
	c := &cluster{api: "http://" + httpAddr, dir: dir}
	start := func(bin string, env ...string) error {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), env...)
		cmd.Env = append(cmd.Env, "LOG_LEVEL=warn")
		cmd.Stdout, cmd.Stderr = o.procLog, o.procLog
		if err := cmd.Start(); err != nil {
			return err
		}
		c.procs = append(c.procs, cmd)
		return nil
	}
	// The API token is passed on purpose: the demo sends it.
	if err = start(o.masterBin, append([]string{"MASTER_HTTP_ADDR=" + httpAddr, "MASTER_GRPC_ADDR=" + grpcAddr,
		"MASTER_DB_PATH=" + filepath.Join(dir, "roundhouse.db"), "MASTER_API_TOKEN=" + o.token}, localenv.MasterEnv()...)...); err != nil {
		c.stop()
		return nil, err
	}
	cl := client.New(c.api, client.WithToken(o.token))
	// Workers start one at a time so the rotation order is w1, w2, ...
	for i := 1; i <= o.workers; i++ {
		if err = start(o.workerBin, append([]string{fmt.Sprintf("WORKER_ID=w%d", i), "WORKER_MASTER_ADDR=" + grpcAddr}, localenv.WorkerEnv()...)...); err == nil {
			_, err = cl.WaitWorkers(ctx, i)
		}
		if err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

// stop ends the workers and then the master, waits for them, and removes
// the master's database.
func (c *cluster) stop() {
	defer os.RemoveAll(c.dir)
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
