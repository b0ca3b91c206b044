package bearer

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	const token = "s3cret-token-0123456789"
	for _, tt := range []struct {
		name, header string
		want         error
	}{
		{"right token", "Bearer " + token, nil},
		{"scheme in any case", "bEARER " + token, nil},
		{"spaces around the token", "Bearer   " + token + "  ", nil},
		{"empty header", "", ErrMissing},
		{"token without a scheme", token, ErrMalformed},
		{"another scheme", "Basic " + token, ErrMalformed},
		{"scheme without a token", "Bearer", ErrMalformed},
		{"scheme and spaces only", "Bearer    ", ErrMalformed},
		{"space before the scheme", " Bearer " + token, ErrMalformed},
		{"wrong token", "Bearer not-the-token-0123456", ErrWrong},
		{"prefix of the token", "Bearer " + token[:len(token)-1], ErrWrong},
		{"token and more", "Bearer " + token + "x", ErrWrong},
		{"token in another case", "Bearer S3CRET-TOKEN-0123456789", ErrWrong},
		{"two tokens", "Bearer " + token + " " + token, ErrWrong},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := New(token).Check(tt.header); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Check(%q) = %v, want %v", tt.header, err, tt.want)
			}
		})
	}
}

func TestEnabled(t *testing.T) {
	if !New("x").Enabled() {
		t.Fatal("New with a token is not enabled")
	}
	off := New("")
	if off.Enabled() {
		t.Fatal("New with no token is enabled")
	}
	// Disabled, it still accepts nothing: letting requests through is the
	// caller's decision.
	for _, h := range []string{"", "Bearer", "Bearer ", "Bearer x"} {
		if err := off.Check(h); err == nil {
			t.Fatalf("disabled Check(%q) = nil, want an error", h)
		}
	}
}
