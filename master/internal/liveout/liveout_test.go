package liveout

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/events"
)

func TestRingWrapsAndKeepsOffsets(t *testing.T) {
	r := newRing(8)
	r.write(0, []byte("abcdef"))
	r.write(6, []byte("ghijk")) // 11 bytes written: the first 3 are gone
	if r.start != 3 || r.end != 11 {
		t.Fatalf("start, end = %d, %d; want 3, 11", r.start, r.end)
	}
	skipped, data := r.read(0, 100)
	if skipped != 3 || string(data) != "defghijk" {
		t.Fatalf("read(0) = %d %q; want 3 \"defghijk\"", skipped, data)
	}
	skipped, data = r.read(5, 2)
	if skipped != 0 || string(data) != "fg" {
		t.Fatalf("read(5, 2) = %d %q; want 0 \"fg\"", skipped, data)
	}
	// A chunk bigger than the ring keeps its last bytes only.
	r.write(11, []byte("0123456789"))
	if skipped, data = r.read(11, 100); skipped != 2 || string(data) != "23456789" {
		t.Fatalf("after a big chunk, read(11) = %d %q; want 2 \"23456789\"", skipped, data)
	}
}

func TestRingGrowsWithItsOutput(t *testing.T) {
	r := newRing(1 << 20)
	r.write(0, []byte("hello\n"))
	if len(r.buf) > 4096 {
		t.Fatalf("a 6-byte stream allocated %d bytes", len(r.buf))
	}
	big := bytes.Repeat([]byte("x"), 10000)
	r.write(6, big)
	if _, data := r.read(0, 1<<20); string(data) != "hello\n"+string(big) {
		t.Fatalf("after growing, the stream reads %d bytes, want %d", len(data), 6+len(big))
	}
}

func TestRingOverlapAndGap(t *testing.T) {
	r := newRing(64)
	r.write(0, []byte("hello "))
	if n := r.write(0, []byte("hello world")); n != 5 { // a resend that goes further
		t.Fatalf("overlapping write took %d bytes, want 5", n)
	}
	if n := r.write(3, []byte("lo")); n != 0 {
		t.Fatalf("a resend took %d bytes, want 0", n)
	}
	r.write(20, []byte("after")) // bytes 11..19 never came
	skipped, data := r.read(0, 100)
	if skipped != 0 || string(data) != "hello world" {
		t.Fatalf("read(0) = %d %q; want 0 \"hello world\" (stopping at the gap)", skipped, data)
	}
	skipped, data = r.read(11, 100)
	if skipped != 9 || string(data) != "after" {
		t.Fatalf("read(11) = %d %q; want 9 \"after\"", skipped, data)
	}
}

func TestRingBoundsItsGaps(t *testing.T) {
	r := newRing(1 << 16)
	for i := range 3 * maxHoles {
		r.write(int64(2*i), []byte("x")) // a byte, a gap, a byte...
	}
	if len(r.holes) > maxHoles {
		t.Fatalf("%d gaps kept, want at most %d", len(r.holes), maxHoles)
	}
	var total int64
	for pos := int64(0); pos < r.end; {
		skipped, data := r.read(pos, 100)
		total += skipped + int64(len(data))
		pos += skipped + int64(len(data))
	}
	if total != r.end {
		t.Fatalf("reading accounts for %d bytes, want %d", total, r.end)
	}
}

func assigned(id, worker string, attempt int) events.Event {
	return events.Event{Type: events.TaskAssigned, TaskID: id, WorkerID: worker, Attempt: attempt}
}

func chunk(id, worker string, attempt int, s Stream, off int64, data string) Chunk {
	return Chunk{TaskID: id, WorkerID: worker, Attempt: attempt, Stream: s, Offset: off, Data: []byte(data)}
}

// drain reads everything f has now.
func drain(t *testing.T, f *Follower) []Event {
	t.Helper()
	var all []Event
	for {
		evs, wait, closed := f.Next(1 << 20)
		if closed {
			t.Fatal("follower closed")
		}
		all = append(all, evs...)
		if wait != nil || len(evs) == 0 {
			return all
		}
	}
}

// describe writes events compactly, for comparing.
func describe(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		switch e.Kind {
		case KindAttempt:
			b.WriteString("attempt " + strconv.Itoa(e.Attempt) + " " + e.WorkerID + ";")
		case KindOutput:
			b.WriteString(e.Stream.String() + "@" + strconv.Itoa(int(e.Offset)) + " " + string(e.Data) + ";")
		case KindSkipped:
			b.WriteString("skipped " + e.Stream.String() + " " + strconv.Itoa(int(e.Bytes)) + ";")
		case KindAttemptEnd:
			b.WriteString("end " + strconv.Itoa(e.Attempt) + " " + e.Outcome + ";")
		case KindFinal:
			b.WriteString("final " + e.Status + ";")
		}
	}
	return b.String()
}

func TestAppendKeepsOnlyTheCurrentDelivery(t *testing.T) {
	b := New(1024)
	if b.Append(chunk("t1", "w1", 1, Stdout, 0, "early")) {
		t.Error("a chunk before any delivery was kept")
	}
	b.Observe(assigned("t1", "w1", 1))
	tests := []struct {
		name string
		c    Chunk
		want bool
	}{
		{"current", chunk("t1", "w1", 1, Stdout, 0, "a"), true},
		{"other worker", chunk("t1", "w2", 1, Stdout, 1, "b"), false},
		{"other attempt", chunk("t1", "w1", 2, Stdout, 1, "c"), false},
		{"unknown task", chunk("t2", "w1", 1, Stdout, 0, "d"), false},
		{"bad stream", chunk("t1", "w1", 1, Stream(7), 1, "e"), false},
		{"negative offset", chunk("t1", "w1", 1, Stdout, -1, "f"), false},
		{"stderr", chunk("t1", "w1", 1, Stderr, 0, "g"), true},
	}
	for _, tt := range tests {
		if got := b.Append(tt.c); got != tt.want {
			t.Errorf("%s: Append = %v, want %v", tt.name, got, tt.want)
		}
	}
	s, ok := b.Snapshot("t1")
	if !ok || s.Attempt != 1 || s.WorkerID != "w1" || string(s.Streams[Stdout].Data) != "a" || string(s.Streams[Stderr].Data) != "g" {
		t.Fatalf("Snapshot = %+v, %v", s, ok)
	}
	if b.Received() != 2 {
		t.Errorf("Received = %d, want 2", b.Received())
	}
}

func TestDeliverySwitchOnReRun(t *testing.T) {
	b := New(1024)
	b.Observe(assigned("t1", "w1", 1))
	f := b.Follow("t1")
	defer f.Close()
	b.Append(chunk("t1", "w1", 1, Stdout, 0, "one\n"))
	b.Observe(events.Event{Type: events.TaskRequeued, TaskID: "t1", WorkerID: "w1", Attempt: 1, Reason: "worker_timed_out", Detail: "gone"})
	if b.Append(chunk("t1", "w1", 1, Stdout, 4, "late\n")) {
		t.Error("a chunk of a lost delivery was kept")
	}
	b.Observe(assigned("t1", "w2", 2))
	b.Append(chunk("t1", "w2", 2, Stdout, 0, "two\n"))
	b.Observe(events.Event{Type: events.TaskScheduled, TaskID: "t1", WorkerID: "w2", Attempt: 2, Status: "failed", Reason: "retry"})
	b.Observe(assigned("t1", "w3", 3))
	b.Append(chunk("t1", "w3", 3, Stderr, 0, "three\n"))
	b.Observe(events.Event{Type: events.TaskFinished, TaskID: "t1", WorkerID: "w3", Attempt: 3, Status: "succeeded"})
	got := describe(drain(t, f))
	// Attempt 1's ring went when attempt 3 started (only the latest
	// delivery before the current one is kept), so its line is skipped.
	want := "attempt 1 w1;skipped stdout 4;end 1 lost;attempt 2 w2;skipped stdout 4;end 2 failed;attempt 3 w3;final succeeded;"
	if got != want {
		t.Fatalf("follower saw\n%s\nwant\n%s", got, want)
	}
	if _, ok := b.Snapshot("t1"); ok {
		t.Error("a final task still has a live snapshot")
	}
}

func TestFollowerSeesEachDeliveryInOrder(t *testing.T) {
	b := New(1024)
	b.Observe(assigned("t1", "w1", 1))
	f := b.Follow("t1")
	defer f.Close()
	b.Append(chunk("t1", "w1", 1, Stdout, 0, "one\n"))
	if got := describe(drain(t, f)); got != "attempt 1 w1;stdout@0 one\n;" {
		t.Fatalf("got %q", got)
	}
	b.Observe(events.Event{Type: events.TaskRequeued, TaskID: "t1", WorkerID: "w1", Attempt: 1, Reason: "worker_timed_out"})
	b.Observe(assigned("t1", "w2", 2))
	b.Append(chunk("t1", "w2", 2, Stdout, 0, "two\n"))
	b.Observe(events.Event{Type: events.TaskFinished, TaskID: "t1", WorkerID: "w2", Attempt: 2, Status: "succeeded"})
	// The final drops the ring: "two" comes from the stored output.
	if got := describe(drain(t, f)); got != "end 1 lost;attempt 2 w2;final succeeded;" {
		t.Fatalf("got %q", got)
	}
}

func TestFinalDropsBuffers(t *testing.T) {
	b := New(1024)
	b.Observe(assigned("t1", "w1", 1))
	b.Append(chunk("t1", "w1", 1, Stdout, 0, "x"))
	b.Observe(events.Event{Type: events.TaskFinished, TaskID: "t1", Attempt: 1, Status: "succeeded"})
	if n := len(b.entries); n != 0 {
		t.Fatalf("%d entries after the only task went final", n)
	}
	// With a follower, the entry stays (without rings) until it leaves.
	b.Observe(assigned("t2", "w1", 1))
	f := b.Follow("t2")
	b.Observe(events.Event{Type: events.TaskCanceled, TaskID: "t2", Status: "canceled"})
	for _, d := range b.entries["t2"].deliveries {
		if d.rings != [2]*ring{} {
			t.Fatal("a final task kept its rings")
		}
	}
	if got := describe(drain(t, f)); got != "attempt 1 w1;final canceled;" {
		t.Fatalf("got %q", got)
	}
	f.Close()
	if n := len(b.entries); n != 0 {
		t.Fatalf("%d entries after the last follower left", n)
	}
	// A lost delivery nobody follows leaves nothing behind either.
	b.Observe(assigned("t3", "w1", 1))
	b.Observe(events.Event{Type: events.TaskRequeued, TaskID: "t3", Attempt: 1})
	if n := len(b.entries); n != 0 {
		t.Fatalf("%d entries after an unfollowed delivery was lost", n)
	}
}

func TestSlowFollowerNeverBlocksAppendAndIsToldWhatItSkipped(t *testing.T) {
	b := New(4096)
	b.Observe(assigned("t1", "w1", 1))
	f := b.Follow("t1") // never reads until the end
	defer f.Close()
	line := strings.Repeat("y", 99) + "\n"
	for i := range 1000 { // 100 KB through a 4 KiB ring
		if !b.Append(chunk("t1", "w1", 1, Stdout, int64(i*len(line)), line)) {
			t.Fatalf("chunk %d refused", i)
		}
	}
	evs := drain(t, f)
	if len(evs) < 3 || evs[0].Kind != KindAttempt || evs[1].Kind != KindSkipped || evs[2].Kind != KindOutput {
		t.Fatalf("slow follower saw %s", describe(evs))
	}
	var got int64
	for _, e := range evs[2:] {
		got += int64(len(e.Data))
	}
	if skipped := evs[1].Bytes; skipped+got != int64(1000*len(line)) || got != 4096 {
		t.Fatalf("skipped %d + read %d bytes, want %d in all with 4096 read", skipped, got, 1000*len(line))
	}
}

func TestFollowerIsWokenAndCloseEndsIt(t *testing.T) {
	b := New(1024)
	f := b.Follow("t1") // before the task runs
	defer f.Close()
	evs, wait, _ := f.Next(100)
	if len(evs) != 0 || wait == nil {
		t.Fatalf("Next on a task not running = %v, %v", evs, wait)
	}
	b.Observe(assigned("t1", "w1", 1))
	select {
	case <-wait:
	default:
		t.Fatal("the start of a delivery did not wake the follower")
	}
	drain(t, f)
	_, wait, _ = f.Next(100)
	b.Close()
	select {
	case <-wait:
	default:
		t.Fatal("Close did not wake the follower")
	}
	if _, _, closed := f.Next(100); !closed {
		t.Fatal("Next after Close did not report closed")
	}
}

func TestReclaimedKeepsTheDelivery(t *testing.T) {
	b := New(1024)
	b.Observe(assigned("t1", "w1", 1))
	b.Append(chunk("t1", "w1", 1, Stdout, 0, "abc"))
	b.Observe(events.Event{Type: events.TaskAssigned, TaskID: "t1", WorkerID: "w1", Attempt: 1, Reason: "reclaimed"})
	b.Append(chunk("t1", "w1", 1, Stdout, 3, "def"))
	if s, _ := b.Snapshot("t1"); string(s.Streams[Stdout].Data) != "abcdef" {
		t.Fatalf("after a reclaim the stream reads %q, want \"abcdef\"", s.Streams[Stdout].Data)
	}
}

// A stream that keeps a follower's limit full must not starve the other:
// stderr waited behind stdout until its own ring overflowed.
func TestFollowerReadsStderrBesideAFloodOfStdout(t *testing.T) {
	b := New(4096)
	b.Observe(assigned("t1", "w1", 1))
	f := b.Follow("t1")
	defer f.Close()
	out := strings.Repeat("o", 999) + "\n"
	var outOff, errOff int64
	var gotErr strings.Builder
	skipped := false
	for round := range 20 {
		b.Append(chunk("t1", "w1", 1, Stdout, outOff, out))
		outOff += int64(len(out))
		line := fmt.Sprintf("err %02d\n", round)
		b.Append(chunk("t1", "w1", 1, Stderr, errOff, line))
		errOff += int64(len(line))
		evs, _, _ := f.Next(512) // less than stdout gains each round
		for _, e := range evs {
			switch {
			case e.Kind == KindOutput && e.Stream == Stderr:
				gotErr.Write(e.Data)
			case e.Kind == KindSkipped && e.Stream == Stderr:
				skipped = true
			}
		}
	}
	if skipped {
		t.Fatal("stderr was skipped")
	}
	var want strings.Builder
	for round := range 20 {
		fmt.Fprintf(&want, "err %02d\n", round)
	}
	if gotErr.String() != want.String() {
		t.Fatalf("a follower reading 512 bytes a call while stdout gains 1000 saw stderr %q, want every line: %q", gotErr.String(), want.String())
	}
}
