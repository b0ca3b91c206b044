package dispatch

import (
	"encoding/binary"
	"hash/maphash"
)

// taskKey is a task ID as the live tasks and the queue hold it: 16 bytes
// with no pointer, so that a million of them are neither 48-byte strings on
// the heap nor something the garbage collector scans.
//
// The master's IDs are UUIDs (v7) in their canonical form, and such an ID
// is its key: its 16 bytes, parsed on entry and written out again on
// demand. Any other ID (tests use their own; a store from before could
// hold any) gets an alias: a key whose variant bits (the top two of byte 8)
// are 00, which no key parsed from an RFC 9562 UUID has (they are 10), so
// the two kinds never collide. An alias is counted from a number never
// handed out twice, so a stale key left in the queue by a task that left
// memory never stands for another task.
type taskKey [16]byte

// idTable turns IDs into keys and back. Guarded by Dispatcher.mu.
type idTable struct {
	alias map[string]taskKey // IDs that are not canonical RFC 9562 UUIDs
	names map[taskKey]string // the inverse of alias
	last  uint64             // the last alias handed out
	seed  maphash.Seed       // for liveTasks.shapes
}

func newIDTable() idTable {
	return idTable{alias: make(map[string]taskKey), names: make(map[taskKey]string), seed: maphash.MakeSeed()}
}

// key returns id's key, giving it an alias if it needs one.
func (t *idTable) key(id string) taskKey {
	if k, ok := t.lookup(id); ok {
		return k
	}
	t.last++
	var k taskKey
	binary.BigEndian.PutUint64(k[:8], t.last) // byte 8, and so the variant, stays 0
	t.alias[id] = k
	t.names[k] = id
	return k
}

// lookup returns id's key without giving it one: false for an ID with no
// alias, which no live task has.
func (t *idTable) lookup(id string) (taskKey, bool) {
	if k, ok := parseUUID(id); ok {
		return k, true
	}
	k, ok := t.alias[id]
	return k, ok
}

// forget drops id's alias, if it has one, once its task left memory.
func (t *idTable) forget(id string, k taskKey) {
	if t.names[k] == id {
		delete(t.alias, id)
		delete(t.names, k)
	}
}

// id returns the ID of k; "" for an alias forgotten.
func (t *idTable) id(k taskKey) string {
	if isUUID(k) {
		var b [36]byte
		return string(formatUUID(&b, k))
	}
	return t.names[k]
}

// appendID appends the ID of k to dst: no allocation for a UUID when dst
// has room for 36 bytes.
func (t *idTable) appendID(dst []byte, k taskKey) []byte {
	if isUUID(k) {
		var b [36]byte
		return append(dst, formatUUID(&b, k)...)
	}
	return append(dst, t.names[k]...)
}

// isUUID reports whether k was parsed from a UUID: its variant is RFC 9562's.
func isUUID(k taskKey) bool { return k[8]&0xc0 == 0x80 }

const hexDigits = "0123456789abcdef"

// formatUUID writes k in the canonical form, lower case, into b.
func formatUUID(b *[36]byte, k taskKey) []byte {
	j := 0
	for i, c := range k {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = hexDigits[c>>4], hexDigits[c&0xf]
		j += 2
	}
	return b[:]
}

// parseUUID parses a UUID written exactly as formatUUID writes one (so
// that the ID written back is the same string) with the RFC 9562 variant.
func parseUUID(s string) (taskKey, bool) {
	var k taskKey
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return k, false
	}
	j := 0
	for i := range k {
		if j == 8 || j == 13 || j == 18 || j == 23 {
			j++
		}
		hi, ok1 := unhex(s[j])
		lo, ok2 := unhex(s[j+1])
		if !ok1 || !ok2 {
			return k, false
		}
		k[i] = hi<<4 | lo
		j += 2
	}
	return k, isUUID(k)
}

// unhex is the value of a lower-case hex digit.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
