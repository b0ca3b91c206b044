package dispatch

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"math/rand/v2"
)

// compactTable maps task keys to compact queued tasks: the one structure
// that grows with a backlog of a million. A Go map would do, but its
// tables split in waves (every table at once, when the keys hash evenly),
// so with a million entries it is about half empty: 69 bytes a task for a
// 32-byte slot. This table is open addressing with linear probing, its
// slots the entries themselves, in shards that each grow by half (not
// double) when 7/8 full and halve when a quarter full: at least 58% full
// whatever the count, about 46 bytes a task. A shard is rehashed on its
// own, so growth costs a 256th of the table at a time under the
// dispatcher's lock, as the Go map's table splits do.
//
// Guarded by Dispatcher.mu.
type compactTable struct {
	seed   uint64
	shards [tableShards]tableShard
	n      int
}

const (
	tableShards  = 256
	minShardSize = 8
)

type tableShard struct {
	slots []tableSlot // a slot whose shape is nil is empty
	n     int
}

type tableSlot struct {
	key taskKey
	q   queuedTask
}

func newCompactTable() compactTable { return compactTable{seed: rand.Uint64()} }

// hash mixes the key's two halves (a UUID's random bits, or an alias's
// counter) with the seed: the top byte picks the shard, the rest the slot.
func (t *compactTable) hash(k taskKey) uint64 {
	h := binary.LittleEndian.Uint64(k[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(k[8:]) ^ t.seed
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	return h ^ h>>33
}

// home is the slot where k's probe starts in a shard of size n.
func home(h uint64, n int) int {
	hi, _ := bits.Mul64(h<<8, uint64(n))
	return int(hi)
}

func (t *compactTable) len() int { return t.n }

func (t *compactTable) get(k taskKey) (queuedTask, bool) {
	h := t.hash(k)
	s := &t.shards[h>>56]
	if i := s.find(k, h); i >= 0 {
		return s.slots[i].q, true
	}
	return queuedTask{}, false
}

// set adds or replaces k's task; q.shape must not be nil.
func (t *compactTable) set(k taskKey, q queuedTask) {
	h := t.hash(k)
	s := &t.shards[h>>56]
	if i := s.find(k, h); i >= 0 {
		s.slots[i].q = q
		return
	}
	if (s.n+1)*8 > len(s.slots)*7 {
		s.resize(t, max(minShardSize, len(s.slots)+len(s.slots)/2))
	}
	s.place(h, tableSlot{k, q})
	s.n++
	t.n++
}

func (t *compactTable) del(k taskKey) {
	h := t.hash(k)
	s := &t.shards[h>>56]
	i := s.find(k, h)
	if i < 0 {
		return
	}
	// Backward-shift deletion: move up each later entry of the run whose
	// probe could not have passed the hole, so lookups never stop early.
	size := len(s.slots)
	for j := i; ; {
		if j++; j == size {
			j = 0
		}
		if s.slots[j].q.shape == nil {
			break
		}
		hj := home(t.hash(s.slots[j].key), size)
		// Whether hj lies cyclically in (i, j]: then the entry stays.
		if (i < j && i < hj && hj <= j) || (j < i && (i < hj || hj <= j)) {
			continue
		}
		s.slots[i] = s.slots[j]
		i = j
	}
	s.slots[i] = tableSlot{}
	s.n--
	t.n--
	if len(s.slots) > minShardSize && s.n*4 < len(s.slots) {
		s.resize(t, len(s.slots)/2)
	}
}

func (s *tableShard) find(k taskKey, h uint64) int {
	size := len(s.slots)
	if size == 0 {
		return -1
	}
	for i := home(h, size); ; {
		sl := &s.slots[i]
		if sl.q.shape == nil {
			return -1
		}
		if sl.key == k {
			return i
		}
		if i++; i == size {
			i = 0
		}
	}
}

// place puts e in the first empty slot of its probe; there is one.
func (s *tableShard) place(h uint64, e tableSlot) {
	size := len(s.slots)
	for i := home(h, size); ; {
		if s.slots[i].q.shape == nil {
			s.slots[i] = e
			return
		}
		if i++; i == size {
			i = 0
		}
	}
}

func (s *tableShard) resize(t *compactTable, size int) {
	old := s.slots
	s.slots = make([]tableSlot, size)
	for _, e := range old {
		if e.q.shape != nil {
			s.place(t.hash(e.key), e)
		}
	}
}

// all yields every entry, in no order. The table must not change meanwhile.
func (t *compactTable) all() iter.Seq2[taskKey, queuedTask] {
	return func(yield func(taskKey, queuedTask) bool) {
		for si := range t.shards {
			for _, e := range t.shards[si].slots {
				if e.q.shape != nil && !yield(e.key, e.q) {
					return
				}
			}
		}
	}
}
