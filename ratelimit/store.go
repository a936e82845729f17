// Package ratelimit counts requests per key against a daily quota and a
// burst rate, in stores that may be local or shared.
package ratelimit

import (
	"context"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// Store keeps request counters per key. A store may be remote, may fail, and
// may be shared by several Caddy instances: Take returns an error when it
// cannot answer, and the caller decides what that means for the request.
type Store interface {
	// Take spends one request of key's budget if every limit of p allows
	// it. It is atomic: either every limit is charged or none is.
	Take(ctx context.Context, key string, p Policy) (Result, error)

	// Peek reports where key stands under p without spending anything.
	Peek(ctx context.Context, key string, p Policy) (Result, error)
}

// LocalPeeker is a store that can tell where a key stands as this instance
// last saw it, without asking a shared store: for answers that only report
// the limits (a 403 to an authenticated key), not for deciding. ok is false
// when this instance has no view of the key.
type LocalPeeker interface {
	PeekLocal(key string, p Policy) (res Result, ok bool)
}

// Resetter is a store that can forget a key's counters.
type Resetter interface {
	Reset(ctx context.Context, key string) error
}

// Policy is the limits that apply to one key.
type Policy struct {
	// Daily is the number of requests a key may make per window.
	Daily int64
	// Window is the daily window.
	Window Window
	// Burst, when set, limits short bursts with GCRA.
	Burst rate.Rate
}

// Limit names which limit refused a request.
type Limit uint8

// Limits.
const (
	NoLimit Limit = iota
	DailyLimit
	BurstLimit
)

// Usage is where one limit stands after a Take.
type Usage struct {
	// Limit is the number of requests the window allows.
	Limit int64
	// Remaining is how many more requests the window allows now.
	Remaining int64
	// Reset is when the window's budget is whole again: the end of the
	// daily window, or when a burst bucket has refilled.
	Reset time.Time
	// Window is the length of the window this usage counts in.
	Window time.Duration
}

// Result is the outcome of a Take.
type Result struct {
	Allowed bool
	// Uncounted is set when the request was let through without counting
	// (a shared store failing with on_failure open); the usages are empty.
	Uncounted bool
	// Now is the store's clock at the decision; resets are relative to it.
	Now time.Time
	// DeniedBy names the limit that refused the request, when !Allowed.
	DeniedBy Limit
	// RetryAfter is how long until a request would pass, when !Allowed.
	RetryAfter time.Duration
	Daily      Usage
	// Burst is the zero Usage when the policy has no burst rate.
	Burst Usage
}

// Announcer is a Store shared by several instances that can tell which
// instance is the first to announce something about a key in a window, so
// that a once-per-window event is sent once for the whole cluster.
type Announcer interface {
	// FirstToAnnounce reports whether no instance announced what for the
	// key before; the mark lasts until until. Reset forgets the marks.
	FirstToAnnounce(ctx context.Context, key, what string, until time.Time) (bool, error)
}
