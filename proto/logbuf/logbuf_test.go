package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// stuck is an output whose writes wait until it is opened; open, it is a
// buffer safe for concurrent use.
type stuck struct {
	open    chan struct{}
	entered chan struct{} // a write has started
	once    sync.Once
	mu      sync.Mutex // protects b
	b       bytes.Buffer
}

func newStuck() *stuck { return &stuck{open: make(chan struct{}), entered: make(chan struct{})} }

func newOpen() *stuck {
	s := newStuck()
	close(s.open)
	return s
}

func (s *stuck) Write(p []byte) (int, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.open
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *stuck) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// within fails the test unless f returns within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// While the output is stuck, Write returns at once: the lines that fit are
// kept and written in order once it moves, the others dropped, and the
// count of those is told after them.
func TestWriteNeverWaitsForTheOutput(t *testing.T) {
	out := newStuck()
	var notices []int
	var w *Writer
	w = Start(out, 100, func(n int) {
		notices = append(notices, n)
		fmt.Fprintf(w, "dropped %d\n", n)
	})
	line := func(i int) string { return fmt.Sprintf("line %03d\n", i) } // 9 bytes
	fmt.Fprint(w, line(0))
	<-out.entered // run holds line 0 and waits on the output
	within(t, 5*time.Second, "50 writes to a stuck output", func() {
		for i := 1; i <= 50; i++ {
			fmt.Fprint(w, line(i))
		}
	})
	close(out.open)
	within(t, 5*time.Second, "Close", func() { w.Close() })

	var want strings.Builder
	for i := 0; i <= 11; i++ { // line 0, then 11 lines of 9 bytes fit in 100
		want.WriteString(line(i))
	}
	want.WriteString("dropped 39\n")
	if got := out.String(); got != want.String() {
		t.Errorf("output:\n%s\nwant:\n%s", got, want.String())
	}
	if len(notices) != 1 || notices[0] != 39 {
		t.Errorf("notices %v, want [39]", notices)
	}
}

// Lines from many goroutines come out whole, each goroutine's in order,
// and Close writes what is left.
func TestLinesWholeAndInOrder(t *testing.T) {
	out := newOpen()
	w := Start(out, 1<<20, nil)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(w, "g%d %d %s\n", g, i, strings.Repeat("x", i%50))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		f := strings.Fields(l)
		var g, i int
		if len(f) < 2 || len(f) > 3 {
			t.Fatalf("line %q is not whole", l)
		}
		if _, err := fmt.Sscanf(f[0]+" "+f[1], "g%d %d", &g, &i); err != nil || g < 0 || g >= writers {
			t.Fatalf("line %q is not whole: %v", l, err)
		}
		if xs := strings.Join(f[2:], ""); i != next[g] || xs != strings.Repeat("x", i%50) {
			t.Fatalf("line %q: want g%d's line %d, whole", l, g, next[g])
		}
		next[g]++
	}
}

// Writes after Close are dropped without a word, and Close may be called
// again.
func TestWriteAfterClose(t *testing.T) {
	out := newOpen()
	w := Start(out, 1<<10, func(n int) { t.Errorf("notice of %d dropped lines after Close", n) })
	fmt.Fprint(w, "before\n")
	w.Close()
	if n, err := fmt.Fprint(w, "after\n"); n != 6 || err != nil {
		t.Errorf("Write after Close = %d, %v; want 6, nil", n, err)
	}
	w.Close()
	if got := out.String(); got != "before\n" {
		t.Errorf("output %q, want %q", got, "before\n")
	}
}

// Close waits for the output only so long: a program stopping while its
// output is stuck (a log driver that stopped reading) exits, losing the
// lines left, instead of hanging until it is killed. Lines written after
// are dropped, and the goroutine ends once the output moves.
func TestCloseGivesUpOnAStuckOutput(t *testing.T) {
	out := newStuck()
	w := Start(out, 1<<10, nil)
	w.closeWait = 50 * time.Millisecond
	fmt.Fprint(w, "first\n")
	<-out.entered // run waits on the output with "first"
	fmt.Fprint(w, "second\n")
	var err error
	within(t, 5*time.Second, "Close with the output stuck", func() { err = w.Close() })
	if err == nil {
		t.Error("Close = nil with lines left unwritten; want an error saying so")
	}
	fmt.Fprint(w, "after\n")
	close(out.open)
	within(t, 5*time.Second, "the goroutine, once the output moved", func() { <-w.done })
	if got, want := out.String(), "first\nsecond\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}
