package agent

import (
	"math/rand/v2"
	"time"
)

// backoffBase is the first wait after a failure.
const backoffBase = 100 * time.Millisecond

// backoff is exponential with full jitter: the nth wait is random in
// [0, min(base·2ⁿ, max)], so workers that lost the same master do not all
// come back at the same instant. The zero value with max set is ready.
type backoff struct {
	max time.Duration
	cur time.Duration // the current ceiling; 0 before the first failure
}

// next returns how long to wait after one more failure.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = min(backoffBase, b.max)
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return rand.N(b.cur + 1)
}

// reset starts over after a success.
func (b *backoff) reset() { b.cur = 0 }
