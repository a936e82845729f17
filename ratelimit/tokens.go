package ratelimit

import (
	"context"
	"sync/atomic"
	"time"
)

// Token budgets: how many LLM tokens (prompt and completion) a key may
// spend per daily window and per minute, and per model. A request reserves
// an estimate before it is proxied and settles to what the upstream
// reported once the answer ends, so a budget is never overshot by more
// than the difference between reports and reservations of requests in
// flight.

// TokenPolicy is the token budgets that apply to a key on one request.
type TokenPolicy struct {
	// Daily is the tokens a key may spend per daily Window; 0 means no
	// daily budget.
	Daily  int64
	Window Window
	// PerMinute is the tokens a key may spend per minute (UTC clock
	// minutes); 0 means none.
	PerMinute int64
	// Model and ModelDaily are the request's model and the key's daily
	// budget for it (per Window), when it has one; ModelDaily 0 means none.
	Model      string
	ModelDaily int64
}

// IsZero reports whether the policy has no budget at all.
func (p TokenPolicy) IsZero() bool { return p.Daily == 0 && p.PerMinute == 0 && p.ModelDaily == 0 }

// TokenLimit names the token budget that refused a reservation.
type TokenLimit uint8

// Token limits.
const (
	NoTokenLimit TokenLimit = iota
	DailyTokens
	MinuteTokens
	ModelTokens
)

// Reservation is tokens charged ahead of a request, to be settled once its
// use is known.
type Reservation struct {
	// ID names the reservation in its store, so that it is settled once:
	// settling it again does nothing. 0 for one made before ids (a test's
	// literal), which is settled every time.
	ID uint64
	// Tokens is what was charged.
	Tokens int64
	// Day and Minute are the starts (Unix seconds) of the daily window and
	// the minute it was charged in: a settlement corrects only the windows
	// still current, since a new window starts from zero.
	Day, Minute int64
	// Local is set when a shared store charged it in this instance's
	// memory (Redis failing, on_failure local): it is settled there too.
	Local bool
	// Uncounted is set when nothing was charged (Redis failing, on_failure
	// open); settling it does nothing.
	Uncounted bool
}

// TokenResult is the outcome of a reservation, or where a key stands.
type TokenResult struct {
	Allowed bool
	// Uncounted: let through without counting (on_failure open).
	Uncounted bool
	// Now is the store's clock at the decision.
	Now time.Time
	// DeniedBy and RetryAfter say which budget refused and when a
	// reservation of the same size could fit, when !Allowed.
	DeniedBy   TokenLimit
	RetryAfter time.Duration
	// Daily, Minute and Model are where each budget stands after the
	// reservation; a Usage with Limit 0 is a budget the policy lacks.
	Daily, Minute, Model Usage
	// Reservation is what to settle, when Allowed.
	Reservation Reservation
}

// reservationIDs numbers reservations in this process; a shared store
// adds the instance's id.
var reservationIDs atomic.Uint64

// reservationTTL is how long a reservation stays charged without being
// settled: one whose settlement is lost (an instance that died, a Redis
// that never acknowledged) is then given back by the store itself, and a
// settlement that comes later charges the tokens used alone.
const reservationTTL = 15 * time.Minute

// TokenStore keeps token budgets per key, exactly: a reservation and a
// settlement are each one atomic step, across instances for a shared store.
type TokenStore interface {
	// Reserve charges n tokens to every budget of p if each has room for
	// them, or none.
	Reserve(ctx context.Context, key string, p TokenPolicy, n int64) (TokenResult, error)
	// Settle replaces reservation r by the tokens used: it adds
	// used - r.Tokens to the windows r was charged in that are still
	// current, never taking a budget below zero. It does so once per
	// reservation id: settling a reservation again does nothing.
	Settle(ctx context.Context, key string, p TokenPolicy, r Reservation, used int64) error
	// PeekTokens reports where key's budgets stand under p.
	PeekTokens(ctx context.Context, key string, p TokenPolicy) (TokenResult, error)
}
