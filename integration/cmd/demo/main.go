// Command demo shows the round-robin at a glance: it submits a batch of
// tasks, one after another, and prints which worker ran each.
//
// With -api it uses a running master (the compose lab). Otherwise it starts
// its own cluster of local processes from the -master and -worker binaries
// (integration/internal/localcluster), workers w1..wN registered in that
// order, and stops it at the end. With -serve it starts that cluster, says
// where its API is, and keeps it running until Ctrl-C: that is make dev.
//
//	go run ./integration/cmd/demo -master bin/master -worker bin/worker -workers 3
//	go run ./integration/cmd/demo -api http://127.0.0.1:9092
//	go run ./integration/cmd/demo -api http://127.0.0.1:9092 -wait-workers 5 -tasks 0
//	go run ./integration/cmd/demo -serve -workers 5 -http 127.0.0.1:9092 -grpc 127.0.0.1:50051 -db roundhouse.db
//
// -token (default $MASTER_API_TOKEN) is sent as the API's bearer token; the
// local cluster's master is started with it as its MASTER_API_TOKEN. The
// local cluster runs without TLS, and without a worker token but under
// -serve, where master and workers get $MASTER_WORKER_TOKEN if it is set,
// whatever else the caller's environment holds for the compose lab.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/roundhouse-lab/roundhouse/integration/client"
	"github.com/roundhouse-lab/roundhouse/integration/internal/localcluster"
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

	serve       bool   // keep the local cluster running until ctx ends
	httpAddr    string // the local master's REST address; empty: a free port
	grpcAddr    string // the local master's gRPC address; empty: a free port
	db          string // the local master's database; empty: a temporary one
	workerToken string // the local cluster's worker token; empty: none
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
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long (-serve: on starting)")
	flag.BoolVar(&o.serve, "serve", false, "start the local cluster, print its API address and keep it until Ctrl-C")
	flag.StringVar(&o.httpAddr, "http", "", "the local master's REST address (default: a free loopback port)")
	flag.StringVar(&o.grpcAddr, "grpc", "", "the local master's gRPC address (default: a free loopback port)")
	flag.StringVar(&o.db, "db", "", "the local master's database (default: a temporary one, removed at the end)")
	flag.Parse()
	if o.serve {
		// make dev's cluster takes the shell's worker token, as the
		// compose lab's workers take .env's.
		o.workerToken = os.Getenv("MASTER_WORKER_TOKEN")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	do := run
	if o.serve {
		do = func(ctx context.Context, o options, out io.Writer) ([]string, error) { return nil, serve(ctx, o, out) }
	}
	if _, err := do(ctx, o, os.Stdout); err != nil {
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
		defer c.Close()
		api = c.API
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

// startCluster starts the local cluster: a master and workers w1..wN,
// registered one at a time so the rotation order is w1, w2, ... Without
// -serve the processes log warnings only, so that the demo's table stays
// readable.
func startCluster(ctx context.Context, o options) (*localcluster.Cluster, error) {
	cfg := localcluster.Config{
		Bin:      localcluster.Binaries{Master: o.masterBin, Worker: o.workerBin},
		HTTPAddr: o.httpAddr, GRPCAddr: o.grpcAddr, DBPath: o.db,
		APIToken: o.token, WorkerToken: o.workerToken, // the API token on purpose: the demo sends it
		Log: o.procLog,
	}
	if !o.serve {
		cfg.MasterEnv, cfg.WorkerEnv = []string{"LOG_LEVEL=warn"}, []string{"LOG_LEVEL=warn"}
	}
	c, err := localcluster.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := c.StartWorkers(ctx, o.workers); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// serve starts the local cluster, says where it is, and stops it in order
// once ctx ends (Ctrl-C).
func serve(ctx context.Context, o options, out io.Writer) error {
	sctx, cancel := context.WithTimeout(ctx, o.timeout)
	c, err := startCluster(sctx, o)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	auth := "no API token"
	if o.token != "" {
		auth = "API token: $MASTER_API_TOKEN"
	}
	fmt.Fprintf(out, "local cluster up: master %s (%s), workers dial %s, %d workers w1..w%d; Ctrl-C stops all\n",
		c.API, auth, c.GRPCAddr, o.workers, o.workers)
	select {
	case <-ctx.Done():
	case <-c.Master().Done():
		c.Close()
		return fmt.Errorf("the master exited: %v", c.Master().Err())
	}
	fmt.Fprintln(out, "stopping the local cluster")
	return c.Close()
}
