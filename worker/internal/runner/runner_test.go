package runner

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testDeadline bounds every run in these tests: a kill that does not work
// shows up as a failure instead of a hung test.
const testDeadline = 15 * time.Second // well below the 30 s sleeps

func run(t *testing.T, cmd string, timeout time.Duration, maxOutput int) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	res := Run(ctx, cmd, Options{Timeout: timeout, MaxOutput: maxOutput})
	if ctx.Err() != nil {
		t.Fatalf("%q still running after %s: %+v", cmd, testDeadline, res)
	}
	return res
}

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		cmd        string
		max        int
		wantCode   int
		wantStdout string
		wantStderr string
		wantOutCut bool
		wantErrCut bool
	}{
		{name: "stdout and stderr", cmd: "echo hi; echo err >&2", max: 1024, wantCode: 0, wantStdout: "hi\n", wantStderr: "err\n"},
		{name: "non-zero exit", cmd: "echo partial; exit 3", max: 1024, wantCode: 3, wantStdout: "partial\n"},
		{name: "output at the limit is whole", cmd: "printf 12345", max: 5, wantStdout: "12345"},
		{name: "stdout over the limit", cmd: "printf 123456789", max: 5, wantStdout: "12345", wantOutCut: true},
		{name: "stderr over the limit", cmd: "printf abcdef >&2", max: 2, wantStderr: "ab", wantErrCut: true},
		{name: "non-UTF-8 bytes", cmd: `printf '\377\376\000x'`, max: 1024, wantStdout: "\xff\xfe\x00x"},
		{name: "command not found", cmd: "no-such-command-roundhouse", max: 1024, wantCode: 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, tt.cmd, 0, tt.max)
			if res.ExitCode != tt.wantCode || res.Err != "" || res.TimedOut {
				t.Errorf("exit %d, err %q, timed out %v; want exit %d, no error", res.ExitCode, res.Err, res.TimedOut, tt.wantCode)
			}
			if !bytes.Equal(res.Stdout, []byte(tt.wantStdout)) || res.StdoutTruncated != tt.wantOutCut {
				t.Errorf("stdout %q (truncated %v), want %q (truncated %v)", res.Stdout, res.StdoutTruncated, tt.wantStdout, tt.wantOutCut)
			}
			if tt.wantStderr != "" && (!bytes.Equal(res.Stderr, []byte(tt.wantStderr)) || res.StderrTruncated != tt.wantErrCut) {
				t.Errorf("stderr %q (truncated %v), want %q (truncated %v)", res.Stderr, res.StderrTruncated, tt.wantStderr, tt.wantErrCut)
			}
			if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
				t.Errorf("started %v, finished %v", res.StartedAt, res.FinishedAt)
			}
		})
	}
}

func TestRunLargeOutputIsDrained(t *testing.T) {
	// Far more than a pipe buffer: if the writer stopped reading at the
	// limit, head would block and the run would hit the test deadline.
	res := run(t, "head -c 1000000 /dev/zero; echo done >&2", 0, 100)
	if len(res.Stdout) != 100 || !res.StdoutTruncated {
		t.Errorf("kept %d bytes, truncated %v; want 100, true", len(res.Stdout), res.StdoutTruncated)
	}
	if string(res.Stderr) != "done\n" || res.ExitCode != 0 {
		t.Errorf("stderr %q, exit %d; want the command to finish", res.Stderr, res.ExitCode)
	}
}

// recorder is a Live that keeps everything, as a test may.
type recorder struct {
	mu     sync.Mutex // protects out
	out    map[Stream][]byte
	writes int
}

func (r *recorder) Write(s Stream, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out == nil {
		r.out = make(map[Stream][]byte)
	}
	r.out[s] = append(r.out[s], p...) // a copy: Run reuses p
	r.writes++
}

func TestRunLiveSeesAllOutputInOrder(t *testing.T) {
	tests := []struct {
		name       string
		cmd        string
		max        int
		wantLive   string // stdout, as the sink sees it
		wantLiveE  string // stderr, as the sink sees it
		wantStdout string
		wantOutCut bool
	}{
		{name: "small", cmd: "for i in 1 2 3; do echo line$i; echo err$i >&2; done", max: 1024,
			wantLive: "line1\nline2\nline3\n", wantLiveE: "err1\nerr2\nerr3\n", wantStdout: "line1\nline2\nline3\n"},
		{name: "past the limit", cmd: "printf 123; printf 456789; printf abc >&2", max: 5,
			wantLive: "123456789", wantLiveE: "abc", wantStdout: "12345", wantOutCut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var live recorder
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			res := Run(ctx, tt.cmd, Options{MaxOutput: tt.max, Live: &live})
			if res.ExitCode != 0 || res.Err != "" {
				t.Fatalf("exit %d, err %q; want a clean exit", res.ExitCode, res.Err)
			}
			live.mu.Lock()
			defer live.mu.Unlock()
			if got := string(live.out[Stdout]); got != tt.wantLive {
				t.Errorf("live stdout %q, want %q", got, tt.wantLive)
			}
			if got := string(live.out[Stderr]); got != tt.wantLiveE {
				t.Errorf("live stderr %q, want %q", got, tt.wantLiveE)
			}
			if string(res.Stdout) != tt.wantStdout || res.StdoutTruncated != tt.wantOutCut {
				t.Errorf("stdout %q (truncated %v), want %q (truncated %v)", res.Stdout, res.StdoutTruncated, tt.wantStdout, tt.wantOutCut)
			}
			if string(res.Stderr) != tt.wantLiveE || res.StderrTruncated {
				t.Errorf("stderr %q (truncated %v), want %q whole", res.Stderr, res.StderrTruncated, tt.wantLiveE)
			}
		})
	}
}

func TestRunLiveSeesLargeOutput(t *testing.T) {
	// Several pipe reads: the sink must get every byte, each read's buffer
	// copied before Run reuses it.
	var live recorder
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	res := Run(ctx, "seq 1 100000", Options{MaxOutput: 100, Live: &live})
	want, err := exec.Command("seq", "1", "100000").Output()
	if err != nil {
		t.Fatal(err)
	}
	live.mu.Lock()
	defer live.mu.Unlock()
	if !bytes.Equal(live.out[Stdout], want) || live.writes < 2 {
		t.Errorf("live saw %d bytes in %d writes, want the %d bytes of seq, in several", len(live.out[Stdout]), live.writes, len(want))
	}
	if !bytes.Equal(res.Stdout, want[:100]) || !res.StdoutTruncated {
		t.Errorf("stdout %q (truncated %v), want the first 100 bytes", res.Stdout, res.StdoutTruncated)
	}
}

func TestRunTimeoutKillsTheGroup(t *testing.T) {
	// The background child holds stdout: unless the whole group dies, it
	// outlives the run. The shell records the child's PID ($!) as soon as it
	// has forked it, so the PID is on file whenever the timeout falls; the
	// child itself, which must exec a shell first, could be killed before it
	// wrote its own $$ on a machine slow to fork and exec.
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := "echo started; sh -c 'exec sleep 30' & echo $! > " + pidFile + "; sleep 30"
	res := run(t, cmd, 300*time.Millisecond, 1024)
	if !res.TimedOut || res.ExitCode != -1 || res.Err != "timed out after 300ms" {
		t.Fatalf("timed out %v, exit %d, err %q; want a timeout", res.TimedOut, res.ExitCode, res.Err)
	}
	if string(res.Stdout) != "started\n" {
		t.Errorf("stdout %q, want the output from before the timeout", res.Stdout)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the background child never started: %v", err)
	}
	pid := strings.TrimSpace(string(b))
	eventually(t, func() bool { return gone(pid) }, 5*time.Second, "background child "+pid+" still alive after the timeout")
}

func TestRunShellExitsLeavingAChild(t *testing.T) {
	// The shell exits at once, but its background child holds stdout and
	// stderr. Run must kill the child when the shell exits and return the
	// shell's status: Run returns only once both pipes are closed, so if the
	// child is not dead or dying the moment Run returns, it was killed
	// late (or never), not at the shell's exit. $! is known before the shell
	// exits, so the PID file is there even if the child dies at once.
	pidFile := filepath.Join(t.TempDir(), "pid")
	res := run(t, "echo hi; sleep 30 & echo $! > "+pidFile+"; exit 5", 0, 1024)
	pid := readPID(t, pidFile)
	if !gone(pid) {
		t.Errorf("background child %s still alive when Run returned", pid)
	}
	if res.ExitCode != 5 || res.Err != "" || res.TimedOut || string(res.Stdout) != "hi\n" {
		t.Fatalf("exit %d, err %q, timed out %v, stdout %q; want exit 5 and hi", res.ExitCode, res.Err, res.TimedOut, res.Stdout)
	}
}

func TestRunChildThatLeftTheGroup(t *testing.T) {
	// A child that calls setsid escapes the group kill and keeps stdout
	// open: Run must still return, with the shell's status and output,
	// instead of waiting for the child (which outlives the test deadline).
	// The child writes its PID once it is out of the group, and the shell
	// waits for that, or the group kill could catch it before its setsid.
	pidFile := filepath.Join(t.TempDir(), "pid")
	res := run(t, "echo hi; setsid sh -c 'echo $$ > "+pidFile+"; exec sleep 60' & "+
		"until [ -s "+pidFile+" ]; do sleep 0.01; done; exit 0", 0, 1024)
	pid := readPID(t, pidFile)
	t.Cleanup(func() {
		if n, err := strconv.Atoi(pid); err == nil {
			_ = syscall.Kill(n, syscall.SIGKILL) // the test's leftover, by its own PID
		}
	})
	if res.ExitCode != 0 || res.Err != "" || string(res.Stdout) != "hi\n" {
		t.Fatalf("exit %d, err %q, stdout %q; want exit 0 and hi", res.ExitCode, res.Err, res.Stdout)
	}
	if gone(pid) {
		t.Errorf("child %s died; the test no longer covers a child outside the group", pid)
	}
}

func readPID(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the background child never started: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func TestRunEnvironment(t *testing.T) {
	res := Run(context.Background(), `echo "$ONLY_THIS:${WORKER_TOKEN-unset}"`,
		Options{Timeout: 5 * time.Second, MaxOutput: 1024, Env: []string{"ONLY_THIS=yes", "PATH=/usr/bin:/bin"}})
	if got := string(res.Stdout); got != "yes:unset\n" {
		t.Errorf("stdout %q, want the given environment only", got)
	}
}

// gone reports whether the process is dead or dying: no longer in /proc, a
// zombie waiting for a reaper (containers often run without an init), or
// exiting (PF_EXITING: a killed process has closed its files, so its pipes
// are at EOF, a moment before it turns zombie).
func gone(pid string) bool {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	// The fields after the parenthesised command name: state, ppid, pgrp,
	// session, tty_nr, tpgid, flags, ...
	_, after, ok := strings.Cut(string(stat), ") ")
	fields := strings.Fields(after)
	if !ok || len(fields) < 7 {
		return false
	}
	const pfExiting = 0x4
	flags, err := strconv.ParseUint(fields[6], 10, 64)
	return fields[0] == "Z" || fields[0] == "X" || (err == nil && flags&pfExiting != 0)
}

func eventually(t *testing.T, cond func() bool, within time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

func TestRunCanceled(t *testing.T) {
	// The marker file shows the shell is running, so the cancel kills a live
	// process rather than preventing its start.
	marker := filepath.Join(t.TempDir(), "started")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() { done <- Run(ctx, "touch "+marker+"; sleep 30", Options{MaxOutput: 1024}) }()
	eventually(t, func() bool { _, err := os.Stat(marker); return err == nil }, testDeadline, "the command never started")
	cancel()
	select {
	case res := <-done:
		if res.Err != "canceled" || res.ExitCode != -1 || res.TimedOut {
			t.Fatalf("err %q, exit %d, timed out %v; want canceled", res.Err, res.ExitCode, res.TimedOut)
		}
	case <-time.After(testDeadline):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunAlreadyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := Run(ctx, "echo never", Options{MaxOutput: 1024})
	if res.ExitCode != -1 || res.Err != "canceled" || len(res.Stdout) != 0 {
		t.Fatalf("exit %d, err %q, stdout %q; want canceled before start", res.ExitCode, res.Err, res.Stdout)
	}
}

func TestBoundedWriter(t *testing.T) {
	w := &boundedWriter{max: 4}
	for _, s := range []string{"ab", "cde", "fgh"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if string(w.buf) != "abcd" || w.dropped != 4 {
		t.Fatalf("kept %q, dropped %d; want abcd, 4", w.buf, w.dropped)
	}
}

func TestRunKilledBySignal(t *testing.T) {
	// A shell killed from elsewhere says by what, as os.ProcessState would.
	res := run(t, "kill -9 $$", 0, 1024)
	if res.ExitCode != -1 || res.Err != "signal: killed" || res.TimedOut {
		t.Fatalf("exit %d, err %q, timed out %v; want signal: killed", res.ExitCode, res.Err, res.TimedOut)
	}
}

func TestRunDoesNotLeakDescriptors(t *testing.T) {
	// Every run opens two pipes (and a pidfd): all must be closed by the
	// time Run returns, whatever became of the command.
	run(t, "true", 0, 1024) // opens /dev/null, kept for every run after
	before := openFDs(t)
	for _, cmd := range []string{"true", "echo hi; exit 3", "kill -9 $$"} {
		run(t, cmd, 0, 1024)
	}
	run(t, "sleep 30", 50*time.Millisecond, 1024)
	if after := openFDs(t); after != before {
		t.Errorf("%d open descriptors after the runs, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestRunTimeoutWhileWriting(t *testing.T) {
	// A command that never stops writing wakes the wait again and again:
	// the timeout must still fire, and so must the drain's end for a child
	// that left the group and goes on writing.
	t.Run("timeout", func(t *testing.T) {
		res := run(t, "yes", 200*time.Millisecond, 10)
		if !res.TimedOut || string(res.Stdout) != "y\ny\ny\ny\ny\n" || !res.StdoutTruncated {
			t.Fatalf("timed out %v, stdout %q (truncated %v); want a timeout after the first 10 bytes", res.TimedOut, res.Stdout, res.StdoutTruncated)
		}
	})
	t.Run("drain", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		res := run(t, "setsid sh -c 'echo $$ > "+pidFile+"; exec yes' & "+
			"until [ -s "+pidFile+" ]; do sleep 0.01; done; exit 0", 0, 10)
		pid := readPID(t, pidFile)
		t.Cleanup(func() {
			if n, err := strconv.Atoi(pid); err == nil {
				_ = syscall.Kill(n, syscall.SIGKILL) // the test's leftover, by its own PID
			}
		})
		if res.ExitCode != 0 || res.Err != "" {
			t.Fatalf("exit %d, err %q; want exit 0", res.ExitCode, res.Err)
		}
	})
}

// overlapLive counts Writes that began while another was still going on:
// Live's contract is one Write at a time, both streams together.
type overlapLive struct {
	inside, overlaps atomic.Int32
	bytes            [3]atomic.Int64
}

func (o *overlapLive) Write(s Stream, p []byte) {
	if !o.inside.CompareAndSwap(0, 1) {
		o.overlaps.Add(1)
	}
	for range 10 { // widen the window, as a sink that does some work would
		runtime.Gosched()
	}
	o.bytes[s].Add(int64(len(p)))
	o.inside.Store(0)
}

// Both streams written at once: the portable runner, one copying goroutine
// per pipe, handed them to Live together.
func TestRunLiveWritesOneAtATime(t *testing.T) {
	var live overlapLive
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	res := Run(ctx, "i=0; while [ $i -lt 2000 ]; do echo out; echo err >&2; i=$((i+1)); done",
		Options{MaxOutput: 16, Live: &live})
	if res.ExitCode != 0 || live.bytes[Stdout].Load() != 8000 || live.bytes[Stderr].Load() != 8000 {
		t.Fatalf("exit %d, live saw %d and %d bytes; want 0, 8000 and 8000", res.ExitCode, live.bytes[Stdout].Load(), live.bytes[Stderr].Load())
	}
	if n := live.overlaps.Load(); n > 0 {
		t.Errorf("%d Writes began while another was going on; want one at a time", n)
	}
}

// The cut at MaxOutput falls between UTF-8 characters: a command that wrote
// valid UTF-8 must not get a stray partial character at the end of its
// kept output, which the master shows as U+FFFD (a character the command
// never wrote). Bytes that are not UTF-8 are kept as they are.
func TestRunCutKeepsWholeCharacters(t *testing.T) {
	tests := []struct {
		name, cmd, want string
		max             int
	}{
		{"2-byte character cut after its first byte", `printf 'ab\303\251cd'`, "ab", 3},
		{"3-byte character cut after two bytes", `printf 'a\342\202\254b'`, "a", 3},
		{"cut after a whole character", `printf 'ab\303\251cd'`, "ab\u00e9", 4},
		{"not UTF-8 is kept", `printf 'ab\377\376cd'`, "ab\xff\xfe", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, tt.cmd, 0, tt.max)
			if string(res.Stdout) != tt.want || !res.StdoutTruncated {
				t.Errorf("stdout %q (truncated %v), want %q (truncated true)", res.Stdout, res.StdoutTruncated, tt.want)
			}
		})
	}
}
