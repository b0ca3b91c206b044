// Package labels is the syntax of the capability labels a worker declares
// (WORKER_LABELS, RegisterRequest.labels) and a task requires ("requires"
// on POST /tasks): both sides of the wire check them with the same rules.
//
// A label is key=value. A key is 1-63 characters of a-z A-Z 0-9 . _ - /
// starting with a letter or digit; a value is 1-63 characters of
// a-z A-Z 0-9 . _ -. Neither may contain '=' or ',', so a set written as
// "k=v,k=v" reads back unambiguously.
package labels

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// Max bounds the labels of one worker and the requirements of one task.
const Max = 16

const maxLen = 63

// Validate checks every pair of set and their number.
func Validate(set map[string]string) error {
	if len(set) > Max {
		return fmt.Errorf("%d labels; at most %d are allowed", len(set), Max)
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if err := checkKey(k); err != nil {
			return err
		}
		if err := checkValue(k, set[k]); err != nil {
			return err
		}
	}
	return nil
}

func checkKey(k string) error {
	if k == "" || len(k) > maxLen {
		return fmt.Errorf("label key %q must be 1-%d characters", k, maxLen)
	}
	if !alnum(rune(k[0])) {
		return fmt.Errorf("label key %q must start with a letter or a digit", k)
	}
	if i := strings.IndexFunc(k, func(r rune) bool { return !alnum(r) && !strings.ContainsRune("._-/", r) }); i >= 0 {
		return fmt.Errorf("label key %q has %q at byte %d; keys are made of a-z A-Z 0-9 . _ - /", k, runeAt(k, i), i)
	}
	return nil
}

func checkValue(k, v string) error {
	if v == "" || len(v) > maxLen {
		return fmt.Errorf("label %s: the value must be 1-%d characters", k, maxLen)
	}
	if i := strings.IndexFunc(v, func(r rune) bool { return !alnum(r) && !strings.ContainsRune("._-", r) }); i >= 0 {
		return fmt.Errorf("label %s: the value %q has %q at byte %d; values are made of a-z A-Z 0-9 . _ -", k, v, runeAt(v, i), i)
	}
	return nil
}

// runeAt is the character that starts at byte i of s, for errors: s[i]
// alone would name the first byte of a non-ASCII one ('Ã' for 'é').
func runeAt(s string, i int) rune {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r
}

func alnum(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' }

// Parse reads "k=v,k=v" (spaces around items are ignored; "" is no label)
// and validates it. A key given twice is an error.
func Parse(s string) (map[string]string, error) {
	set := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return set, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("label %q is not key=value", item)
		}
		if _, dup := set[k]; dup {
			return nil, fmt.Errorf("label key %q is given twice", k)
		}
		set[k] = v
	}
	if err := Validate(set); err != nil {
		return nil, err
	}
	return set, nil
}

// String writes set as "k=v,k=v", keys sorted: equal sets give equal
// strings, so it serves as the set's key too. It is what Parse reads.
func String(set map[string]string) string {
	if len(set) == 0 {
		return "" // most tasks: no allocation on the submit path
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(set)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(set[k])
	}
	return b.String()
}

// Missing returns the pairs of want that have does not have, sorted, as
// "k=v" strings; none when have satisfies want.
func Missing(have, want map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := have[k]; !ok || v != want[k] {
			out = append(out, k+"="+want[k])
		}
	}
	return out
}

// Satisfies reports whether have contains every pair of want.
func Satisfies(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}
