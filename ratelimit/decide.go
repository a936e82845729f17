package ratelimit

import (
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// state is one key's counters, as any store keeps them: O(1) whatever the
// key's traffic.
type state struct {
	windowStart int64 // Unix seconds; the daily window the count belongs to
	windowEnd   int64 // Unix seconds; zero when no window began yet
	count       int64 // requests admitted in the window
	tat         int64 // GCRA theoretical arrival time, Unix nanoseconds
}

// roll starts a new daily window when the current one has ended. A window,
// once begun, runs to its own end whatever route spends from it, so routes
// with different quota_timezone settings cannot give a key two budgets.
func (s state) roll(now time.Time, p Policy) state {
	if now.Unix() >= s.windowEnd {
		start, end := p.Window.Bounds(now)
		s.windowStart, s.windowEnd, s.count = start.Unix(), end.Unix(), 0
	}
	return s
}

// decide applies one request at now: both limits are checked before either
// is charged, so a refused request spends nothing.
func decide(s state, now time.Time, p Policy) (state, Result) {
	s = s.roll(now, p)
	nowNs := now.UnixNano()
	dailyOK := s.count < p.Daily

	burstOK, newTAT := true, int64(0)
	if !p.Burst.IsZero() {
		// GCRA: each request pushes the theoretical arrival time one
		// emission interval on; a burst of up to Limit fits in one Period.
		newTAT = max(s.tat, nowNs) + interval(p.Burst)
		burstOK = newTAT-nowNs <= int64(p.Burst.Period)
	}

	allowed := dailyOK && burstOK
	if allowed {
		s.count++
		if !p.Burst.IsZero() {
			s.tat = newTAT
		}
	}
	return s, s.result(now, p, allowed, newTAT)
}

// result reports a decision already taken on s (the state after it); for a
// burst refusal, refusedTAT is the arrival time the request would have needed.
func (s state) result(now time.Time, p Policy, allowed bool, refusedTAT int64) Result {
	res := Result{Allowed: allowed}
	s.report(&res, now, p)
	switch {
	case allowed:
	case s.count >= p.Daily:
		res.DeniedBy, res.RetryAfter = DailyLimit, time.Unix(s.windowEnd, 0).Sub(now)
	default:
		res.DeniedBy, res.RetryAfter = BurstLimit, time.Duration(refusedTAT-now.UnixNano()-int64(p.Burst.Period))
	}
	return res
}

// peek reports where a key stands without spending anything.
func peek(s state, now time.Time, p Policy) Result {
	s = s.roll(now, p)
	res := Result{Allowed: true}
	s.report(&res, now, p)
	return res
}

// report fills the usage of both limits from the state.
func (s state) report(res *Result, now time.Time, p Policy) {
	res.Now = now
	res.Daily = Usage{
		Limit:     p.Daily,
		Remaining: max(p.Daily-s.count, 0),
		Reset:     time.Unix(s.windowEnd, 0),
		Window:    time.Duration(s.windowEnd-s.windowStart) * time.Second,
	}
	if p.Burst.IsZero() {
		return
	}
	backlog := max(s.tat-now.UnixNano(), 0) // until the bucket is full again
	res.Burst = Usage{
		Limit:     p.Burst.Limit,
		Remaining: max((int64(p.Burst.Period)-backlog)/interval(p.Burst), 0),
		Reset:     now.Add(time.Duration(backlog)),
		Window:    p.Burst.Period,
	}
}

// interval is GCRA's emission interval: the period shared out per request.
func interval(r rate.Rate) int64 { return max(int64(r.Period)/r.Limit, 1) }
