package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/roundhouse-lab/roundhouse/proto/timerslack"
)

// newHTTPClient is the load generator's client: keep-alive, with an idle
// connection kept for every concurrent sender, so no request pays for a
// TCP handshake.
func newHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns * 2
	tr.MaxIdleConnsPerHost = conns * 2
	tr.DisableCompression = true
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// load is one burst of POSTs: conc senders, each sending the next request
// as soon as its last one is answered, until dur has passed or count
// requests have been sent (whichever is set; count wins when both are).
type load struct {
	client *http.Client
	url    string
	body   []byte
	want   int
	conc   int
	dur    time.Duration
	count  int
	// onBody, if set, sees every answer's body (it must be safe for
	// concurrent use; each body is a slice of its own, which it may keep).
	onBody func([]byte)
}

// loadResult is what one burst measured.
type loadResult struct {
	n       int
	elapsed time.Duration
	lat     []time.Duration // one per request
}

func (r loadResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// run sends the burst. Any answer other than want stops it with an error:
// a benchmark that counts failures as throughput would lie.
func (l load) run(ctx context.Context) (loadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		sent     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex // protects lat and firstErr
		lat      []time.Duration
		firstErr error
	)
	deadline := time.Now().Add(l.dur)
	start := time.Now()
	for range l.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			for ctx.Err() == nil {
				if l.count > 0 {
					if sent.Add(1) > int64(l.count) {
						return
					}
				} else if !time.Now().Before(deadline) {
					return
				}
				t0 := time.Now()
				body, err := l.post(ctx)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				mine = append(mine, time.Since(t0))
				if l.onBody != nil {
					l.onBody(body)
				}
			}
		}()
	}
	wg.Wait()
	res := loadResult{n: len(lat), elapsed: time.Since(start), lat: lat}
	if firstErr != nil {
		return res, firstErr
	}
	return res, ctx.Err()
}

func (l load) post(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(l.body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != l.want {
		return nil, fmt.Errorf("POST %s: %s: %s", l.url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// forkExecRate runs `sh -c true` with os/exec from conc goroutines for dur
// and returns the runs per second: the most tasks per second any worker
// could start on this machine, whatever the scheduler. It also returns the
// CPU time of a run, in ms: the shell's own (from wait4) and this
// process's, which does nothing else meanwhile.
func forkExecRate(ctx context.Context, conc int, dur time.Duration) (rate, cpuMS float64, err error) {
	var children atomic.Int64 // the shells' CPU time, ns
	l, err := loop(ctx, conc, dur, func() error {
		cmd := exec.CommandContext(ctx, "sh", "-c", "true")
		if err := cmd.Run(); err != nil {
			return err
		}
		children.Add(int64(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()))
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("sh -c true: %w", err)
	}
	return float64(l.runs) / l.elapsed.Seconds(), l.msPerRun(l.self + time.Duration(children.Load())), nil
}

// bareForkCPU starts `sh -c true` with syscall.ForkExec, its stdout and
// stderr each a pipe read to its end, and reaps it with wait4, from conc
// goroutines for dur, with nothing of os/exec, and returns this process's
// own CPU time per run, in ms (the shell's is not in it): the least that
// running a command and keeping its output costs the process that starts
// it, which a worker pays whatever else it does. It is the bound of the
// worker's CPU target (Target.Bound).
func bareForkCPU(ctx context.Context, conc int, dur time.Duration) (float64, error) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		return 0, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	argv := []string{"sh", "-c", "true"}
	l, err := loop(ctx, conc, dur, func() error { return bareRun(sh, argv, null.Fd()) })
	if err != nil {
		return 0, fmt.Errorf("bare fork of sh -c true: %w", err)
	}
	return l.msPerRun(l.self), nil
}

// looped is what loop measured.
type looped struct {
	runs    int64
	elapsed time.Duration
	self    time.Duration // this process's CPU time meanwhile
}

// msPerRun is cpu per run, in ms.
func (l looped) msPerRun(cpu time.Duration) float64 {
	return float64(cpu) / float64(time.Millisecond) / float64(max(l.runs, 1))
}

// loop calls run over and over from conc goroutines for dur, or until one
// call fails or ctx ends, and says how many calls returned and what they
// cost this process.
func loop(ctx context.Context, conc int, dur time.Duration, run func() error) (looped, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	before, err := selfCPU()
	if err != nil {
		return looped{}, err
	}
	start := time.Now()
	deadline := start.Add(dur)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if err := run(); err != nil {
					errc <- err
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errc)
	if err := errors.Join(<-errc, ctx.Err()); err != nil {
		return looped{}, err
	}
	after, err := selfCPU()
	if err != nil {
		return looped{}, err
	}
	return looped{runs: n.Load(), elapsed: elapsed, self: after - before}, nil
}

// bareRun is one run of bareForkCPU: stdin from stdin (an open /dev/null),
// stdout and stderr each into a pipe read to its end, then wait4.
func bareRun(path string, argv []string, stdin uintptr) error {
	var buf [512]byte
	var out, errp [2]int
	if err := syscall.Pipe2(out[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	if err := syscall.Pipe2(errp[:], syscall.O_CLOEXEC); err != nil {
		syscall.Close(out[0])
		syscall.Close(out[1])
		return err
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Files: []uintptr{stdin, uintptr(out[1]), uintptr(errp[1])}})
	syscall.Close(out[1])
	syscall.Close(errp[1])
	for _, fd := range []int{out[0], errp[0]} {
		for err == nil {
			var k int
			if k, err = syscall.Read(fd, buf[:]); k == 0 && err == nil {
				break
			}
			if err == syscall.EINTR {
				err = nil
			}
		}
		syscall.Close(fd)
	}
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	for {
		if _, err = syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	if err == nil && ws.ExitStatus() != 0 {
		err = fmt.Errorf("exit status %d", ws.ExitStatus())
	}
	return err
}

// selfCPU is this process's CPU time so far.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// roleEnv is the environment variable that turns the bench binary into the
// minimal, the durable or the row handler, the floor master or an os/exec
// worker, so that each runs as a process of its own like the master does
// and they are measured alike.
const roleEnv = "ROUNDHOUSE_BENCH_ROLE"

// playRole makes this process the handler its environment names
// (roleEnv), if any: it serves until killed and never returns.
func playRole() {
	var serveRole func() error
	role := os.Getenv(roleEnv)
	switch role {
	case "minimal-handler":
		serveRole = serveMinimal
	case "durable-handler":
		serveRole = func() error { return serveDurable(false) }
	case "row-handler":
		serveRole = func() error { return serveDurable(true) }
	case "floor-master":
		serveRole = serveFloor
	case "osexec-worker":
		serveRole = serveFloorWorker
	default:
		return
	}
	if role != "osexec-worker" {
		// The servers are the master's counterparts (its ceiling and
		// bounds): they run with its default timer slack, as it does, so
		// that none of them pays for the runtime's 20 µs sleeps that the
		// master no longer pays for. Not the os/exec worker, whose
		// commands would inherit it. First thing: it executes the program
		// again.
		if err := timerslack.Raise(time.Millisecond); err != nil {
			fmt.Fprintln(os.Stderr, role+": running with the timer slack as it was:", err)
		}
	}
	if err := serveRole(); err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveMinimal is the minimal net/http handler: it reads the body and
// answers 202 with a small JSON object, with the master's server timeouts.
// It prints its address on stdout, then serves until killed.
func serveMinimal() error {
	return serve(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		answer(w)
	})
}

// serve listens on a port of loopback, prints its address on stdout and
// serves h with the master's server timeouts until killed.
func serve(h http.HandlerFunc) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(l.Addr().String())
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	return s.Serve(l)
}

// answer is the handlers' 202.
func answer(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"id":"0"}` + "\n"))
}

// startHandler re-executes this binary as a handler (role: the value of
// roleEnv: "minimal-handler", "durable-handler", "row-handler" or
// "floor-master"), with env added to
// its environment, and returns its URL and process.
func startHandler(role string, env ...string) (string, *exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return "", nil, fmt.Errorf("%s did not start: %w", role, err)
	}
	return "http://" + addr[:len(addr)-1], cmd, nil
}
