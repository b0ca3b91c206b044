// Package bearer checks "Authorization: Bearer <token>" credentials against
// one shared token. It is the check both of the master's transports make
// (the REST API's token, the workers' token on gRPC); each maps the result
// to its own messages and status codes.
package bearer

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"
)

// What Check finds wrong with a header, in the order it looks.
var (
	ErrMissing   = errors.New("bearer: no credentials")                       // the header is empty
	ErrMalformed = errors.New(`bearer: credentials are not "Bearer <token>"`) // another scheme, or no token
	ErrWrong     = errors.New("bearer: wrong token")                          // well formed, but not the token
)

// Token is the token credentials must carry. It keeps only the token's
// hash: both sides are hashed before a constant-time comparison, so neither
// the comparison's time nor its early exit on a length mismatch says
// anything about the token or its length.
type Token struct {
	sum     [sha256.Size]byte
	enabled bool
}

// New returns the check for token; an empty token disables it.
func New(token string) Token {
	return Token{sum: sha256.Sum256([]byte(token)), enabled: token != ""}
}

// Enabled reports whether a token was set. Whether a disabled check lets
// requests through is the caller's to decide: Check itself accepts nothing
// when disabled, since no header carries an empty token.
func (t Token) Enabled() bool { return t.enabled }

// Check returns nil when header is "Bearer <token>" (the scheme in any case,
// spaces around the token ignored), or ErrMissing, ErrMalformed or ErrWrong.
func (t Token) Check(header string) error {
	if header == "" {
		return ErrMissing
	}
	scheme, tok, ok := strings.Cut(header, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return ErrMalformed
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], t.sum[:]) != 1 {
		return ErrWrong
	}
	return nil
}
