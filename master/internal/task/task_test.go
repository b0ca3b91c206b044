package task

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateCmd(t *testing.T) {
	tests := []struct {
		name    string
		cmd     string
		wantErr string // "" for valid
	}{
		{"plain", "echo hello world", ""},
		{"unicode", "echo héllo ✓", ""},
		{"at the limit", strings.Repeat("x", 20), ""},
		{"empty", "", "required"},
		{"blank", " \t\n", "blank"},
		{"over the limit", strings.Repeat("x", 21), "limit is 20"},
		{"invalid UTF-8", "echo \xff", "UTF-8"},
		{"NUL", "echo a\x00b", "NUL"},
		{"tab, CR and LF", "echo a\tb\r\nc", ""},
		{"ESC", "echo \x1b[2J", "control character U+001B at byte 5"},
		{"DEL", "echo \x7f", "control character U+007F"},
		{"C1 CSI", "echo \u009b2J", "control character U+009B at byte 5"},
		{"right-to-left override", "rm x\u202e", "bidirectional formatting character U+202E at byte 4"},
		{"first strong isolate", "ls \u2068", "bidirectional formatting character U+2068"},
		{"right-to-left text", "echo שלום", ""},
		{"zero-width joiner", "echo \u200d", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateCmd(tt.cmd, 20)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.wantErr)
			}
		})
	}
}

func TestFinal(t *testing.T) {
	for s, want := range map[Status]bool{StatusQueued: false, StatusRunning: false, StatusSucceeded: true, StatusFailed: true} {
		if s.Final() != want {
			t.Errorf("%s.Final() = %v, want %v", s, !want, want)
		}
	}
}

func TestOutput(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    string
		wantCut bool
	}{
		{"fits", "hello", 5, "hello", false},
		{"cut", "hello world", 5, "hello", true},
		{"cut before a rune it would split", "ab€", 4, "ab", true},
		{"invalid bytes become U+FFFD", "a\xffb", 10, "a\uFFFDb", false},
		{"replacement counts against the limit", "a\xffb", 4, "a\uFFFD", true},
		{"empty", "", 3, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cut := Output([]byte(tt.in), tt.max)
			if got != tt.want || cut != tt.wantCut {
				t.Errorf("Output(%q, %d) = %q, %v; want %q, %v", tt.in, tt.max, got, cut, tt.want, tt.wantCut)
			}
		})
	}
}
