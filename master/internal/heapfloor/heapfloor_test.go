package heapfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, floor uint64
		base, want  int
	}{
		{3 * mib, 16 * mib, 100, 400},      // 3 MiB × 5 = 15 MiB; the minimum's 4 MiB × 4 is the floor
		{15 * mib / 4, 16 * mib, 100, 327}, // 3.75 MiB × 4.27 >= 16 MiB
		{8 * mib, 16 * mib, 100, 100},      // twice 8 MiB is the floor already
		{150 * mib, 16 * mib, 100, 100},    // a million queued tasks: GOGC's own
		{4 * mib, 16 * mib, 50, 300},       // 4 MiB × 1.5 < 16 MiB: raised to it
		{12 * mib, 16 * mib, 50, 50},       // 12 MiB × 1.5 >= 16 MiB
		{0, 16 * mib, 100, 400},            // nothing live yet: the minimum's bound
		{0, 2 * mib, 100, 100},             // a floor under the minimum: GOGC's own
	} {
		if got := Percent(c.live, c.floor, c.base); got != c.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", c.live, c.floor, c.base, got, c.want)
		}
		// The runtime's goal at that GOGC: the floor, within a percent, or
		// GOGC's own above it.
		p := float64(Percent(c.live, c.floor, c.base))
		goal := max(float64(c.live)*(1+p/100), heapMinimum*p/100)
		own := max(float64(c.live)*(1+float64(c.base)/100), heapMinimum*float64(c.base)/100)
		if want := max(float64(c.floor), own); goal > want*1.01 || goal < want*0.99 {
			t.Errorf("Percent(%d, %d, %d): goal %.0f, want about %.0f, the larger of the floor and GOGC's own", c.live, c.floor, c.base, goal, want)
		}
	}
}

// sink keeps garbage on the heap: a block only a local refers to may be
// made on the stack.
var sink []byte

// garbage allocates n bytes that die at once, in blocks the size of a
// submission's.
func garbage(n int) {
	for i := 0; i < n/8192; i++ {
		sink = make([]byte, 8192)
	}
	sink = nil
}

// collections counts the collections while 256 MiB of garbage is made
// with little live.
func collections() uint32 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	garbage(256 << 20)
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

// TestFloorSpacesTheCollections: with a floor of 64 MiB and this test's
// few MiB live, 256 MiB of garbage takes a handful of collections where
// GOGC alone (a goal of twice the live heap, 4 MiB at least) takes dozens;
// after Stop, GOGC's own again. How many dozens depends on the CPU the
// collector gets meanwhile (80 alone, 22 to 47 beside the other packages'
// tests), so after Stop the count is held against the floor's, not
// against the one before Start.
func TestFloorSpacesTheCollections(t *testing.T) {
	if gogc() != 100 {
		t.Fatalf("GOGC=%d: the test wants the default", gogc())
	}
	without := collections()
	f := Start(64 << 20)
	if f == nil {
		t.Fatal("Start returned nil with a floor and the collector on")
	}
	// The first collection after Start arms the tuning for the next ones.
	with := collections()
	f.Stop()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("after Stop GOGC is %d, want 100 back", got)
	}
	after := collections()
	t.Logf("collections for 256 MiB of garbage: %d without, %d with a 64 MiB floor, %d after Stop", without, with, after)
	if with > 10 || with*3 > without {
		t.Errorf("%d collections with the floor, %d without: want at most 10 and a third", with, without)
	}
	if after <= 2*with {
		t.Errorf("%d collections after Stop, %d with the floor: the floor stayed", after, with)
	}
}

// TestFloorFollowsTheLiveHeap: once the live heap outgrows the floor,
// the goal is GOGC's own (no larger heap for a big queue), and back under
// it, the floor again.
func TestFloorFollowsTheLiveHeap(t *testing.T) {
	f := Start(32 << 20)
	defer f.Stop()
	percent := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.percent
	}
	waitFor := func(what string, ok func(int) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(percent()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC set to %d", what, percent())
			}
			runtime.GC() // the finalizer tunes after each collection
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("little live", func(p int) bool { return p > 100 })
	live := make([][]byte, 64) // 64 MiB live, twice the floor
	for i := range live {
		live[i] = make([]byte, 1<<20)
		live[i][0] = 1
	}
	waitFor("64 MiB live", func(p int) bool { return p == 100 })
	runtime.KeepAlive(live)
	live = nil
	waitFor("live again little", func(p int) bool { return p > 100 })
}

func TestOffOrNoFloorDoesNothing(t *testing.T) {
	if f := Start(0); f != nil {
		t.Error("a floor of 0 started a Floor")
	}
	t.Setenv("GOGC", "off")
	if f := Start(16 << 20); f != nil {
		t.Error("GOGC=off started a Floor")
	}
	var f *Floor
	f.Stop() // safe
}
