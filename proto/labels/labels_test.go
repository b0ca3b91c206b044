package labels

import (
	"maps"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{name: "empty", in: "", want: map[string]string{}},
		{name: "blank", in: "  ", want: map[string]string{}},
		{name: "pairs", in: "gpu=nvidia, zone=eu,size=large", want: map[string]string{"gpu": "nvidia", "zone": "eu", "size": "large"}},
		{name: "key with slash and dots", in: "example.com/arch=x86_64", want: map[string]string{"example.com/arch": "x86_64"}},
		{name: "no equals", in: "gpu", wantErr: "not key=value"},
		{name: "empty value", in: "gpu=", wantErr: "value must be"},
		{name: "empty key", in: "=x", wantErr: "must be 1-63"},
		{name: "duplicate key", in: "a=1,a=2", wantErr: "given twice"},
		{name: "equals in value", in: "a=b=c", wantErr: "values are made of"},
		{name: "space inside", in: "a=b c", wantErr: "values are made of"},
		{name: "key starts with dash", in: "-a=1", wantErr: "start with a letter"},
		{name: "key too long", in: strings.Repeat("k", 64) + "=1", wantErr: "must be 1-63"},
		{name: "trailing comma", in: "a=1,", wantErr: "not key=value"},
		{name: "too many", in: many(Max + 1), wantErr: "at most 16"},
		// The error names the character given, not the first byte of it.
		{name: "non-ASCII value", in: "zone=é", wantErr: `"é" has 'é' at byte 0`},
		{name: "non-ASCII key", in: "gpü=1", wantErr: `"gpü" has 'ü' at byte 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
			back, err := Parse(String(got))
			if err != nil || !maps.Equal(back, got) {
				t.Errorf("Parse(String(%v)) = %v, %v; want it back", got, back, err)
			}
		})
	}
}

func many(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = "k" + strings.Repeat("x", i) + "=1"
	}
	return strings.Join(parts, ",")
}

func TestStringIsCanonical(t *testing.T) {
	a := String(map[string]string{"zone": "eu", "gpu": "nvidia"})
	b := String(map[string]string{"gpu": "nvidia", "zone": "eu"})
	if a != b || a != "gpu=nvidia,zone=eu" {
		t.Errorf("String gave %q and %q, want gpu=nvidia,zone=eu for both", a, b)
	}
	if String(nil) != "" {
		t.Errorf("String(nil) = %q, want empty", String(nil))
	}
}

func TestSatisfiesAndMissing(t *testing.T) {
	have := map[string]string{"gpu": "nvidia", "zone": "eu"}
	tests := []struct {
		name    string
		want    map[string]string
		ok      bool
		missing string
	}{
		{name: "nothing required", want: nil, ok: true},
		{name: "subset", want: map[string]string{"gpu": "nvidia"}, ok: true},
		{name: "all", want: have, ok: true},
		{name: "other value", want: map[string]string{"gpu": "amd"}, missing: "gpu=amd"},
		{name: "absent key", want: map[string]string{"gpu": "nvidia", "size": "large"}, missing: "size=large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Satisfies(have, tt.want); got != tt.ok {
				t.Errorf("Satisfies = %v, want %v", got, tt.ok)
			}
			if got := strings.Join(Missing(have, tt.want), ","); got != tt.missing {
				t.Errorf("Missing = %q, want %q", got, tt.missing)
			}
		})
	}
}
