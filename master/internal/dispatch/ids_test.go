package dispatch

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// An ID goes into the live tasks and the queue as a key and comes out the
// same string, whatever its form; two IDs never share a key.
func TestTaskKeysRoundTrip(t *testing.T) {
	v7 := uuid.Must(uuid.NewV7()).String()
	tests := []struct {
		name  string
		id    string
		alias bool // held through the alias table, not parsed
	}{
		{"uuid v7", v7, false},
		{"uuid v4", uuid.NewString(), false},
		{"upper case", strings.ToUpper(v7), true},
		{"no dashes", strings.ReplaceAll(v7, "-", ""), true},
		{"dash misplaced", v7[:7] + "-" + v7[7:8] + v7[9:], true},
		{"variant 0", "00000000-0000-0000-0000-000000000001", true},
		{"variant 11x", "00000000-0000-0000-c000-000000000001", true},
		{"not hex", "0000000g-0000-0000-8000-000000000001", true},
		{"test ID", "t1", true},
		{"empty", "", true},
	}
	ids := newIDTable()
	seen := map[taskKey]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := ids.key(tt.id)
			if got := ids.id(k); got != tt.id {
				t.Fatalf("id(key(%q)) = %q", tt.id, got)
			}
			if isUUID(k) == tt.alias {
				t.Fatalf("key(%q) parsed=%v, want %v", tt.id, isUUID(k), !tt.alias)
			}
			if other, ok := seen[k]; ok {
				t.Fatalf("%q and %q share a key", tt.id, other)
			}
			seen[k] = tt.id
			if again, ok := ids.lookup(tt.id); !ok || again != k {
				t.Fatalf("lookup(%q) = %v %v, want the key it was given", tt.id, again, ok)
			}
			var buf [36]byte
			if got := string(ids.appendID(buf[:0], k)); got != tt.id {
				t.Fatalf("appendID = %q, want %q", got, tt.id)
			}
		})
	}
}

// A forgotten alias is never handed out again: a stale key left in the
// queue must not come to stand for another task.
func TestTaskKeyAliasesAreNotReused(t *testing.T) {
	ids := newIDTable()
	k1 := ids.key("a")
	ids.forget("a", k1)
	if _, ok := ids.lookup("a"); ok {
		t.Fatal("a forgotten ID still has a key")
	}
	if got := ids.id(k1); got != "" {
		t.Fatalf("a forgotten key names %q", got)
	}
	if k2 := ids.key("a"); k2 == k1 {
		t.Fatal("the ID got its forgotten key again")
	}
	if k3 := ids.key("b"); k3 == k1 {
		t.Fatal("another ID got the forgotten key")
	}
}

// Parsing and writing out a UUID key allocate nothing: the assign step
// looks up IDs this way for several classes each time.
func TestTaskKeyUUIDAllocatesNothing(t *testing.T) {
	ids := newIDTable()
	id := uuid.Must(uuid.NewV7()).String()
	var buf [36]byte
	if n := testing.AllocsPerRun(100, func() {
		k, _ := ids.lookup(id)
		_ = ids.appendID(buf[:0], k)
	}); n != 0 {
		t.Fatalf("%v allocations per lookup and appendID", n)
	}
}
