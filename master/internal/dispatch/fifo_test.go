package dispatch

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestFifoFrontAndShrink(t *testing.T) {
	var q fifo
	for i := range 3000 {
		q.pushBack(ent(fmt.Sprint(i)))
	}
	for range 2000 {
		q.pop()
	}
	q.pushFront(ent("x"))
	if e, _ := q.peek(); fid(e) != "x" || q.len() != 1001 {
		t.Fatalf("peek=%s len=%d", fid(e), q.len())
	}
	if len(q.ring) > 2048 {
		t.Fatalf("ring of %d for 1001 IDs: memory does not follow the length", len(q.ring))
	}
	for _, want := range []string{"x", "2000", "2001"} {
		if e, _ := q.peek(); fid(e) != want {
			t.Fatalf("front %s, want %s", fid(e), want)
		}
		q.pop()
	}
}

// A task put back at the front of a long queue costs O(1): nothing is
// copied or allocated while the ring has room, as it does at the front of a
// queue that was only ever pushed at the back.
func TestFifoPushFrontDoesNotCopy(t *testing.T) {
	var q fifo
	for i := range 1000 {
		q.pushBack(ent(fmt.Sprint(i)))
	}
	if room := len(q.ring) - q.len(); room < 21 {
		t.Fatalf("ring of %d for %d IDs: the test needs room for 21 more", len(q.ring), q.len())
	}
	ids := make([]string, 21) // made here: the measured calls allocate nothing themselves
	for i := range ids {
		ids[i] = fmt.Sprint("front", i)
		fifoIDs.key(ids[i])
	}
	ring := &q.ring[0]
	n := 0
	if allocs := testing.AllocsPerRun(20, func() {
		q.pushFront(ent(ids[n]))
		n++
	}); allocs != 0 {
		t.Fatalf("pushFront allocated %.0f times per call, want 0", allocs)
	}
	if &q.ring[0] != ring {
		t.Fatal("pushFront moved the ring")
	}
	for i := n - 1; i >= 0; i-- {
		if e, _ := q.peek(); fid(e) != ids[i] {
			t.Fatalf("front %s, want %s", fid(e), ids[i])
		}
		q.pop()
	}
	if e, _ := q.peek(); fid(e) != "0" || q.len() != 1000 {
		t.Fatalf("after the fronts: peek=%s len=%d, want 0 and 1000", fid(e), q.len())
	}
}

// The ring behaves as a slice used as a deque, through growth, shrinking,
// wrap-around and compaction.
func TestFifoMatchesASlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q fifo
	var model []string
	dead := map[string]bool{}
	for i := range 200_000 {
		id := fmt.Sprint(i)
		switch op := rng.IntN(100); {
		case op < 40:
			q.pushBack(ent(id))
			model = append(model, id)
		case op < 55:
			q.pushFront(ent(id))
			model = slices.Insert(model, 0, id)
		case op < 99:
			if len(model) == 0 {
				continue
			}
			q.pop()
			model = model[1:]
		default: // drop every third queued ID, as the dispatcher's sweep drops stale ones
			for j, id := range model {
				if j%3 == 0 {
					dead[id] = true
				}
			}
			model = slices.DeleteFunc(model, func(id string) bool { return dead[id] })
			q.keep(func(k taskKey) bool { return !dead[fifoIDs.id(k)] })
		}
		if i%1000 == 0 || q.len() < 5 {
			checkQueue(t, &q, model)
		}
	}
	checkQueue(t, &q, model)
}

func checkQueue(t *testing.T, q *fifo, want []string) {
	t.Helper()
	got := make([]string, 0, q.len())
	for i := range q.len() {
		got = append(got, fid(q.ring[q.at(i)]))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("queue holds %d IDs %.80v, want %d %.80v", len(got), got, len(want), want)
	}
	if e, ok := q.peek(); ok != (len(want) > 0) || (ok && fid(e) != want[0]) {
		t.Fatalf("peek = %q %v", fid(e), ok)
	}
	if len(q.ring) > minRing && q.len() < len(q.ring)/8 {
		t.Fatalf("ring of %d for %d IDs", len(q.ring), q.len())
	}
}

// fifoIDs gives the fifo tests' IDs their keys.
var fifoIDs = newIDTable()

func ent(id string) entry { return entry{key: fifoIDs.key(id)} }

func fid(e entry) string { return fifoIDs.id(e.key) }

// removeAt takes an ID from inside the queue, the ring wrapped or not,
// and keeps the order of the rest.
func TestFifoRemoveAt(t *testing.T) {
	var q fifo
	for i := range 60 {
		q.pushBack(ent(fmt.Sprint(i)))
	}
	for i := range 5 { // the front wraps round the ring's end
		q.pushFront(ent(fmt.Sprint("f", i)))
	}
	want := []string{"f4", "f3", "f2", "f1", "f0"}
	for i := range 60 {
		want = append(want, fmt.Sprint(i))
	}
	for _, at := range []int{0, 3, 6, 50, 60} { // 60: the last
		if got := fid(q.removeAt(at)); got != want[at] {
			t.Fatalf("removeAt(%d) = %s, want %s", at, got, want[at])
		}
		want = slices.Delete(want, at, at+1)
	}
	var got []string
	for q.len() > 0 {
		e, _ := q.peek()
		got = append(got, fid(e))
		q.pop()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
}

// removeAt and find at every place of rings of several lengths, wrapped
// round the ring's end and not: removeAt takes the ID asked for from
// either half and keeps the order of the rest, find gives each ID's place
// and -1 for one not there.
func TestFifoRemoveAtAndFindEverywhere(t *testing.T) {
	for _, n := range []int{1, 2, 3, 64, 65, 130} {
		for _, front := range []int{0, 7} { // 7: the front wraps round the ring's end
			for at := range n {
				var q fifo
				var want []string
				for i := range front {
					q.pushFront(ent(fmt.Sprint("f", i)))
					want = append([]string{fmt.Sprint("f", i)}, want...)
				}
				for i := front; i < n; i++ {
					q.pushBack(ent(fmt.Sprint(i)))
					want = append(want, fmt.Sprint(i))
				}
				for i, id := range want {
					if got := q.find(fifoIDs.key(id)); got != i {
						t.Fatalf("n %d, front %d: find(%s) = %d, want %d", n, front, id, got, i)
					}
				}
				if got := q.find(fifoIDs.key("absent")); got != -1 {
					t.Fatalf("n %d: find(absent) = %d, want -1", n, got)
				}
				if got := fid(q.removeAt(at)); got != want[at] {
					t.Fatalf("n %d, front %d: removeAt(%d) = %s, want %s", n, front, at, got, want[at])
				}
				checkQueue(t, &q, slices.Delete(want, at, at+1))
			}
		}
	}
}
