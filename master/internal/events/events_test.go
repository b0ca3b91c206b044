package events

import (
	"testing"
)

func types(es []Event) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func recv(t *testing.T, s *Subscription, n int) []Event {
	t.Helper()
	var out []Event
	for range n {
		select {
		case e, ok := <-s.C():
			if !ok {
				t.Fatalf("subscription closed after %d events, want %d", len(out), n)
			}
			out = append(out, e)
		default:
			t.Fatalf("got %d events, want %d", len(out), n)
		}
	}
	return out
}

func TestPublishInOrder(t *testing.T) {
	h := NewHub(10, 10)
	var observed []uint64
	h.Observe(func(e Event) { observed = append(observed, e.Seq) })
	s, backlog, gap := h.Subscribe(0, false)
	if len(backlog) != 0 || gap {
		t.Fatalf("fresh subscription: backlog %v gap %v", backlog, gap)
	}
	for _, ty := range []Type{TaskQueued, TaskAssigned, TaskFinished} {
		h.Publish(Event{Type: ty, TaskID: "t1"})
	}
	got := recv(t, s, 3)
	for i, want := range []Type{TaskQueued, TaskAssigned, TaskFinished} {
		if got[i].Type != want || got[i].Seq != uint64(i+1) {
			t.Errorf("event %d = %s #%d, want %s #%d", i, got[i].Type, got[i].Seq, want, i+1)
		}
	}
	if len(observed) != 3 || observed[2] != 3 {
		t.Errorf("observer saw %v, want [1 2 3]", observed)
	}
}

func TestSlowSubscriberIsCutOffNotWaitedFor(t *testing.T) {
	h := NewHub(100, 2)
	slow, _, _ := h.Subscribe(0, false)
	fast, _, _ := h.Subscribe(0, false)
	for range 2 {
		h.Publish(Event{Type: TaskQueued})
	}
	recv(t, fast, 2)
	h.Publish(Event{Type: TaskQueued}) // slow's buffer is full: this must not block
	recv(t, fast, 1)
	got := recv(t, slow, 2)
	if got[1].Seq != 2 {
		t.Fatalf("slow got %v", types(got))
	}
	if _, ok := <-slow.C(); ok {
		t.Fatal("slow subscription still open after it fell behind")
	}
	if !slow.Lagged() {
		t.Error("Lagged() = false for a subscriber that fell behind")
	}
	if fast.Lagged() {
		t.Error("Lagged() = true for a subscriber that kept up")
	}
	// It resumes from what it saw; the ring still has the rest.
	again, backlog, gap := h.Subscribe(2, true)
	if gap || len(backlog) != 1 || backlog[0].Seq != 3 {
		t.Fatalf("resume after 2: backlog %v gap %v, want [3] and no gap", types(backlog), gap)
	}
	again.Close()
}

func TestResume(t *testing.T) {
	h := NewHub(3, 10)
	for range 5 {
		h.Publish(Event{Type: TaskQueued})
	}
	tests := []struct {
		name    string
		after   uint64
		want    []uint64
		wantGap bool
	}{
		{"within the ring", 3, []uint64{4, 5}, false},
		{"just at its start", 2, []uint64{3, 4, 5}, false},
		{"before the ring", 1, []uint64{3, 4, 5}, true},
		{"up to date", 5, nil, false},
		{"from a previous life", 9, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, backlog, gap := h.Subscribe(tt.after, true)
			defer s.Close()
			if got := types(backlog); gap != tt.wantGap || len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Errorf("Subscribe(%d) = %v gap %v, want %v gap %v", tt.after, got, gap, tt.want, tt.wantGap)
			}
		})
	}
	// Nothing is lost or repeated between the backlog and the live channel.
	s, backlog, _ := h.Subscribe(4, true)
	h.Publish(Event{Type: TaskAssigned})
	live := recv(t, s, 1)
	if backlog[len(backlog)-1].Seq != 5 || live[0].Seq != 6 {
		t.Errorf("backlog %v then live %v, want ...5 then 6", types(backlog), types(live))
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	h := NewHub(3, 3)
	s, _, _ := h.Subscribe(0, false)
	h.Close()
	if _, ok := <-s.C(); ok {
		t.Fatal("subscription open after Close")
	}
	if s.Lagged() {
		t.Error("Lagged() after Close")
	}
	h.Publish(Event{Type: TaskQueued}) // dropped, no panic
	late, _, _ := h.Subscribe(0, false)
	if _, ok := <-late.C(); ok {
		t.Fatal("subscription after Close is open")
	}
	s.Close() // twice is fine
	var nilHub *Hub
	nilHub.Publish(Event{}) // publishers need no nil check
}

// BenchmarkPublish is the cost the dispatcher pays, under its lock, per
// event, with metrics observing and ten readers; a reader slower than the
// loop is cut off, as it would be in the master.
func BenchmarkPublish(b *testing.B) {
	h := NewHub(4096, 256)
	var n int
	h.Observe(func(Event) { n++ })
	done := make(chan struct{})
	for range 10 {
		s, _, _ := h.Subscribe(0, false)
		go func() { // ends when the hub closes
			for range s.C() {
			}
			done <- struct{}{}
		}()
	}
	e := Event{Type: TaskAssigned, TaskID: "0196a1b2-0000-7000-8000-000000000000", WorkerID: "w1", Attempt: 1}
	b.ReportAllocs()
	for b.Loop() {
		h.Publish(e)
	}
	b.StopTimer()
	h.Close()
	for range 10 {
		<-done
	}
}

// A restarted master numbers its events after the earlier process's, so a
// client resuming with an earlier process's number is told of a gap rather
// than skipping the new process's first events.
func TestResumeFromAnEarlierProcess(t *testing.T) {
	earlier := NewHub(10, 10)
	earlier.StartAfter(1_000_000)
	for range 5 {
		earlier.Publish(Event{Type: TaskQueued})
	}
	last := earlier.Seq() // the client saw everything of the earlier process

	h := NewHub(10, 10)
	h.StartAfter(2_000_000) // started later
	h.Publish(Event{Type: WorkerJoined})
	h.Publish(Event{Type: TaskQueued})
	s, backlog, gap := h.Subscribe(last, true)
	defer s.Close()
	if !gap {
		t.Errorf("resuming from %d on a hub that started after 2000000: no gap", last)
	}
	if got := types(backlog); len(got) != 2 || got[0] != 2_000_001 || got[1] != 2_000_002 {
		t.Errorf("backlog %v, want the new process's events 2000001 and 2000002", got)
	}

	// Before anything is published, a number from before the start is a gap.
	fresh := NewHub(10, 10)
	fresh.StartAfter(3_000_000)
	s2, backlog, gap := fresh.Subscribe(last, true)
	defer s2.Close()
	if !gap || len(backlog) != 0 {
		t.Errorf("fresh hub: gap %v, backlog %v; want a gap and nothing", gap, backlog)
	}
}
