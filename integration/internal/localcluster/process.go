package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Process is one master or worker started by a Cluster.
type Process struct {
	Name    string
	cmd     *exec.Cmd
	started time.Time // just before the exec
	grace   time.Duration
	out     *prefixWriter // nil with Config.LogDir
	done    chan struct{} // closed by the waiting goroutine once the process has been reaped
	err     error         // Wait's result; written before done is closed
}

// start runs bin with the inherited environment plus env, in a process
// group of its own: a Ctrl-C at the terminal reaches only the launcher,
// which stops the cluster in order.
func (c *Cluster) start(name, bin string, env []string) (*Process, error) {
	p := &Process{Name: name, grace: c.cfg.StopTimeout, done: make(chan struct{})}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	if c.cfg.LogDir != "" {
		f, err := os.OpenFile(filepath.Join(c.cfg.LogDir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		defer f.Close() // the process has its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		p.out = &prefixWriter{w: c.log, prefix: name + "| "}
		cmd.Stdout, cmd.Stderr = p.out, p.out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A task's command that outlives a killed worker could hold the
	// output pipe open; Wait gives up on it after this.
	cmd.WaitDelay = 2 * time.Second
	p.cmd = cmd
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	// The one goroutine per process that reaps it; Stop and Kill wait for
	// it, and Close stops every process.
	go func() {
		p.err = cmd.Wait()
		if p.out != nil {
			p.out.flush()
		}
		close(p.done)
	}()
	return p, nil
}

// Pid is the process's ID on this host.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended (nil for exit code 0); valid once Done is closed.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return errors.New("still running")
	}
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL, with no chance to say goodbye, and waits until the
// process is gone.
func (p *Process) Kill() error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, which drains a worker and shuts a master down, and
// waits; a process still there after the cluster's StopTimeout gets
// SIGKILL, and Stop says so. A process that had ended already is left as
// it was.
func (p *Process) Stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(p.grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM: killed", p.Name, p.grace)
	}
}

// lockedWriter serialises the lines of all of a cluster's processes.
type lockedWriter struct {
	mu sync.Mutex // protects w
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// prefixWriter writes whole lines, each prefixed, so that the output of
// several processes interleaves by line. Only exec's copying goroutine
// writes to it, and flush runs after Wait, when that goroutine is done.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte // an unfinished last line
}

func (pw *prefixWriter) Write(b []byte) (int, error) {
	pw.buf = append(pw.buf, b...)
	for {
		i := bytes.IndexByte(pw.buf, '\n')
		if i < 0 {
			break
		}
		_, _ = pw.w.Write([]byte(pw.prefix + string(pw.buf[:i+1])))
		pw.buf = pw.buf[i+1:]
	}
	return len(b), nil
}

func (pw *prefixWriter) flush() {
	if len(pw.buf) > 0 {
		_, _ = pw.w.Write([]byte(pw.prefix + string(pw.buf) + "\n"))
		pw.buf = nil
	}
}
