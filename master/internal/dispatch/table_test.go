package dispatch

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// The table behaves as a Go map through growth, shrinking, wrap-around and
// backward-shift deletion, with keys as the master makes them (UUIDs) and
// as aliases (counters).
func TestCompactTableMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tb := newCompactTable()
	model := map[taskKey]queuedTask{}
	var keys []taskKey
	shape := &queuedShape{cmd: "true"}
	newKey := func(i int) taskKey {
		var k taskKey
		if i%2 == 0 {
			binary.BigEndian.PutUint64(k[:8], rng.Uint64())
			binary.BigEndian.PutUint64(k[8:], rng.Uint64())
			k[8] = k[8]&0x3f | 0x80
		} else {
			binary.BigEndian.PutUint64(k[:8], uint64(i))
		}
		return k
	}
	check := func() {
		t.Helper()
		if tb.len() != len(model) {
			t.Fatalf("len %d, want %d", tb.len(), len(model))
		}
		for k, want := range model {
			if got, ok := tb.get(k); !ok || got != want {
				t.Fatalf("get(%x) = %v %v, want %v", k, got, ok, want)
			}
		}
		n := 0
		for k, q := range tb.all() {
			if model[k] != q {
				t.Fatalf("all yields %x -> %v, want %v", k, q, model[k])
			}
			n++
		}
		if n != len(model) {
			t.Fatalf("all yields %d, want %d", n, len(model))
		}
		for i := range tb.shards {
			s := &tb.shards[i]
			if len(s.slots) > minShardSize && s.n*4 < len(s.slots) {
				t.Fatalf("shard of %d slots for %d entries: memory does not follow the count", len(s.slots), s.n)
			}
		}
	}
	for round := range 3 {
		for i := range 20_000 { // grow, with some deletes and replacements
			switch op := rng.IntN(10); {
			case op < 7 || len(keys) == 0:
				k := newKey(round*100_000 + i)
				q := queuedTask{shape: shape, created: int64(i)}
				tb.set(k, q)
				model[k] = q
				keys = append(keys, k)
			case op < 8:
				k := keys[rng.IntN(len(keys))]
				if _, ok := model[k]; ok {
					q := queuedTask{shape: shape, created: -int64(i)}
					tb.set(k, q)
					model[k] = q
				}
			default:
				k := keys[rng.IntN(len(keys))]
				tb.del(k)
				delete(model, k)
			}
		}
		check()
		for _, k := range keys[:len(keys)*9/10] { // shrink
			tb.del(k)
			delete(model, k)
			if _, ok := tb.get(k); ok {
				t.Fatalf("deleted %x is still there", k)
			}
		}
		keys = keys[len(keys)*9/10:]
		check()
	}
}
