// Package logbuf is the log output of the master and the worker: a
// logging call copies its line into a bounded buffer and returns, and one
// goroutine writes the buffer out. No logging call waits for stderr.
//
// stderr is a pipe (to Docker's log driver, to a terminal) that can stop
// being read: a terminal paused, a log driver behind on its disk. Written
// directly, a full pipe would stop whatever logged: in the master every
// submission, assignment and report, since the dispatcher logs while it
// holds its lock; in a worker the task that logged, whose result would
// then wait. Lines that find the buffer full are dropped and counted, and
// the count is told once the output moves again. Under load the lines of
// several calls go out in one write.
package logbuf

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Writer is an io.Writer that never blocks on its output. Close it to
// write what is left.
type Writer struct {
	out    io.Writer
	max    int
	notice func(dropped int) // called by run, after a write, when lines were dropped

	mu      sync.Mutex // protects buf, dropped, closed
	buf     []byte     // lines not yet written
	dropped int        // lines dropped for want of room since the last notice
	closed  bool       // run has returned, or Close gave up on it

	kick chan struct{} // cap 1: there is something in buf
	stop chan struct{} // closed by Close: write what is left and return
	once sync.Once     // closes stop
	done chan struct{} // closed when run has returned

	closeWait time.Duration // how long Close waits for the output: CloseWait
}

// Start returns a Writer that writes to out, holding at most max bytes
// not yet written, and starts its goroutine, which Close stops. notice,
// if not nil, is called from that goroutine with the number of lines
// dropped since it was last called, once a write has gone through; it may
// write to the Writer.
func Start(out io.Writer, max int, notice func(dropped int)) *Writer {
	w := &Writer{out: out, max: max, notice: notice,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), closeWait: CloseWait}
	go w.run()
	return w
}

// Write copies p, a line of log, to be written. It never blocks on the
// output and never fails: a line that does not fit is dropped whole, and
// so is every line once Close has written what was left.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	switch {
	case w.closed:
	case len(w.buf)+len(p) > w.max:
		w.dropped++
	default:
		w.buf = append(w.buf, p...)
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default: // run is told already
	}
	return len(p), nil
}

// Close writes what the buffer holds, stops the goroutine and waits for
// it, for at most CloseWait: a program that stops while its output is
// stuck (a log driver that stopped reading) must still exit, and it would
// lose those lines all the same once killed. Then Close returns an error,
// every line from then on is dropped, and the goroutine ends by itself
// should the output move again.
func (w *Writer) Close() error {
	w.once.Do(func() { close(w.stop) })
	t := time.NewTimer(w.closeWait)
	defer t.Stop()
	select {
	case <-w.done:
		return nil
	case <-t.C:
	}
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	return fmt.Errorf("the log output did not take the last lines within %s", w.closeWait)
}

// run is the Writer's goroutine: each time it is told, it swaps the buffer
// for the one it wrote last and writes what it took, until there is
// nothing left.
func (w *Writer) run() {
	defer close(w.done)
	var spare []byte // never w.buf's array
	for {
		stopping := false
		select {
		case <-w.kick:
		case <-w.stop:
			stopping = true
		}
		for {
			w.mu.Lock()
			lines, dropped := w.buf, w.dropped
			if len(lines) == 0 && dropped == 0 {
				w.closed = w.closed || stopping // Close may have given up already
				w.mu.Unlock()
				break
			}
			w.buf, w.dropped = spare[:0], 0
			w.mu.Unlock()
			// A failed write has nowhere to be told; the next ones are tried.
			_, _ = w.out.Write(lines)
			spare = lines
			if dropped > 0 && w.notice != nil {
				w.notice(dropped) // its line, if it writes one, is taken in the next round
			}
		}
		if stopping {
			return
		}
	}
}

// CloseWait bounds how long Close waits for the output to take what is
// left.
const CloseWait = 5 * time.Second

// LoggerBuffer is the most log output a NewLogger holds while its output
// is not being read; past it, lines are dropped and counted.
const LoggerBuffer = 1 << 20

// NewLogger returns a program's logger: it writes the lines at level
// ("debug", "info", "warn", "error"; the caller has checked it) and above,
// in format ("json", or text otherwise), to out through a Writer holding
// at most LoggerBuffer bytes, and that Writer, for the caller to Close once
// nothing logs any more. Lines dropped for want of room are told on the
// logger.
func NewLogger(out io.Writer, level, format string) (*slog.Logger, *Writer) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	var log *slog.Logger
	buf := Start(out, LoggerBuffer, func(n int) {
		log.Warn("the log output was not being read; lines dropped", "lines", n)
	})
	if format == "json" {
		log = slog.New(slog.NewJSONHandler(buf, opts))
	} else {
		log = slog.New(slog.NewTextHandler(buf, opts))
	}
	return log, buf
}
