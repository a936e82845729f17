package leak

import (
	"sync"
	"time"
)

// DefaultRate is how many reports a minute the endpoint takes, and
// separately how many refused ones (bad signature, malformed) it answers,
// when the config names no rate. GitHub batches its matches and retries a
// 429, so a burst beyond it is delayed, not lost.
const DefaultRate = 60

// bucket is a token bucket: limit tokens, refilled evenly over period.
type bucket struct {
	mu     sync.Mutex
	limit  float64
	period time.Duration
	tokens float64
	last   time.Time
}

func newBucket(limit int64, period time.Duration) *bucket {
	return &bucket{limit: float64(limit), period: period, tokens: float64(limit)}
}

// take reports whether a token was there at now, and takes it.
func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.limit, b.tokens+now.Sub(b.last).Seconds()*b.limit/b.period.Seconds())
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// empty reports whether no token is there at now, without taking one.
func (b *bucket) empty(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	tokens := b.tokens
	if !b.last.IsZero() {
		tokens = min(b.limit, tokens+now.Sub(b.last).Seconds()*b.limit/b.period.Seconds())
	}
	return tokens < 1
}
