package store

import (
	"context"
	"testing"
)

// ReserveSeq hands out ranges that never overlap, in one process or the
// next one on the same database, whatever the callers' atLeast (a clock
// that stepped back), and starts at atLeast when that is past them all.
func TestReserveSeq(t *testing.T) {
	ctx := context.Background()
	s, path := open(t)
	const span = 100
	a, err := s.ReserveSeq(ctx, "events", 5000, span)
	if err != nil || a != 5000 {
		t.Fatalf("first reservation: %d, %v; want 5000", a, err)
	}
	b, err := s.ReserveSeq(ctx, "events", 1000, span) // the clock went back
	if err != nil || b != a+span {
		t.Fatalf("after a step back: %d, %v; want %d, past the first range", b, err, a+span)
	}
	if other, err := s.ReserveSeq(ctx, "other", 7, span); err != nil || other != 7 {
		t.Fatalf("another sequence: %d, %v; want 7, its own", other, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	c, err := s2.ReserveSeq(ctx, "events", 0, span)
	if err != nil || c != b+span {
		t.Fatalf("in the next process: %d, %v; want %d, past every earlier range", c, err, b+span)
	}
	if d, err := s2.ReserveSeq(ctx, "events", 1<<40, span); err != nil || d != 1<<40 {
		t.Fatalf("with the clock ahead of the floor: %d, %v; want %d", d, err, uint64(1<<40))
	}
	if _, err := s2.ReserveSeq(ctx, "events", 1<<63, span); err == nil {
		t.Fatal("a range past what SQLite's INTEGER holds was reserved")
	}
}
