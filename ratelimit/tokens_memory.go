package ratelimit

import (
	"context"
	"fmt"
	"math"
	"time"
)

// maxTokenModels bounds the models whose daily tokens one key's state
// counts. A key has model budgets only for the models its record names, so
// a real key stays far below it; the bound keeps a key whose requests name
// ever new models (with budgets) from growing memory, or a Redis hash,
// without end. A model beyond it has no room: its reservations are refused
// by ModelTokens until the daily window rolls, since a budget that cannot
// be counted cannot be granted.
const maxTokenModels = 64

// tokenState is one key's token budgets in a Memory: O(1) whatever the
// traffic, plus one entry per budgeted model.
type tokenState struct {
	dayStart, dayEnd int64 // Unix seconds; the daily window dayUsed counts in
	dayUsed          int64
	minute           int64 // Unix seconds; the UTC minute minuteUsed counts in
	minuteUsed       int64
	// models is the tokens per model in the daily window, for models with a
	// budget only; nil until one. Cleared when the daily window rolls.
	models   map[string]int64
	lastSeen int64 // Unix seconds
	// pending is the reservations not settled yet, by id: a settlement
	// applies once. Bounded by the requests in flight; one unsettled for
	// reservationTTL is given back by Sweep.
	pending map[uint64]pendingReservation
	// shared is dayUsed as a shared store last answered it, for the day
	// starting sharedDay: the base of the outage allowance (reserveWithin).
	shared, sharedDay int64
}

// pendingReservation is what a Memory needs to settle, or give back, a
// reservation.
type pendingReservation struct {
	tokens, day, minute, at int64 // at: when it was made, or given back, Unix seconds
	model                   string
	reaped                  bool // given back: a settlement adds the tokens used alone
}

// reapedMarkTTL is how long a reservation given back is remembered, for a
// settlement that comes that late; one later than that does nothing.
const reapedMarkTTL = time.Hour

// tokenView is where a key's budgets stand at some instant, windows rolled
// as they would be: what a decision or a report reads, in either store.
type tokenView struct {
	dayStart, dayEnd, dayUsed int64
	minute, minuteUsed        int64
	modelUsed                 int64 // of the policy's model, when it has a budget
	modelFull                 bool  // that model is not counted and no room is left for it
}

// minuteStart is the start of the UTC minute holding now (Unix seconds).
func minuteStart(now int64) int64 { return now - ((now%60)+60)%60 }

// view reads the state as of now, rolling windows that ended like decide.go's
// roll: a daily window, once begun, runs to its own end whatever Window a
// later policy names, so routes in other zones cannot give a key two budgets.
// It changes nothing, so that a refusal or a peek charges nothing.
func (t *tokenState) view(now time.Time, p TokenPolicy) tokenView {
	sec := now.Unix()
	v := tokenView{dayStart: t.dayStart, dayEnd: t.dayEnd, dayUsed: t.dayUsed, minute: t.minute, minuteUsed: t.minuteUsed}
	rolled := sec >= t.dayEnd
	if rolled {
		start, end := p.Window.Bounds(now)
		v.dayStart, v.dayEnd, v.dayUsed = start.Unix(), end.Unix(), 0
	}
	if sec >= t.minute+60 {
		v.minute, v.minuteUsed = minuteStart(sec), 0
	}
	if p.ModelDaily > 0 && !rolled {
		used, ok := t.models[p.Model]
		v.modelUsed, v.modelFull = used, !ok && len(t.models) >= maxTokenModels
	}
	return v
}

// decide names the first budget of p without room for n more tokens: daily,
// then minute, then model. Each is checked before any is charged, so a
// refused reservation charges nothing. Written as n > limit - used so that
// no sum can overflow.
func (v tokenView) decide(p TokenPolicy, n int64) TokenLimit {
	switch {
	case p.Daily > 0 && n > p.Daily-v.dayUsed:
		return DailyTokens
	case p.PerMinute > 0 && n > p.PerMinute-v.minuteUsed:
		return MinuteTokens
	case p.ModelDaily > 0 && (v.modelFull || n > p.ModelDaily-v.modelUsed):
		return ModelTokens
	}
	return NoTokenLimit
}

// charge stores view v with n tokens added to every counter. The daily and
// minute counters count even without a budget, so a budget that a key gains
// during a day sees the day's use; a model is counted only with a budget,
// which keeps the model map bounded by what records name.
func (t *tokenState) charge(v tokenView, p TokenPolicy, n int64) tokenView {
	v.dayUsed, v.minuteUsed = addTokens(v.dayUsed, n), addTokens(v.minuteUsed, n)
	if p.ModelDaily > 0 {
		v.modelUsed = addTokens(v.modelUsed, n)
	}
	t.store(v, p)
	return v
}

// store sets the state to view v; a new daily window forgets the models.
func (t *tokenState) store(v tokenView, p TokenPolicy) {
	if v.dayStart != t.dayStart || v.dayEnd != t.dayEnd {
		clear(t.models)
	}
	t.dayStart, t.dayEnd, t.dayUsed = v.dayStart, v.dayEnd, v.dayUsed
	t.minute, t.minuteUsed = v.minute, v.minuteUsed
	if p.ModelDaily > 0 {
		t.setModel(p.Model, v.modelUsed)
	}
}

// setModel sets a model's count, unless it is new and the map is full.
func (t *tokenState) setModel(model string, used int64) {
	if _, ok := t.models[model]; !ok && len(t.models) >= maxTokenModels {
		return
	}
	if t.models == nil {
		t.models = make(map[string]int64, 1)
	}
	t.models[model] = used
}

// settle adds delta to the windows r was charged in that are still current
// at now (a new window starts from zero and owes nothing to the old one),
// never below zero.
func (t *tokenState) settle(now int64, p TokenPolicy, r Reservation, delta int64) {
	if t.dayStart == r.Day && now < t.dayEnd {
		t.dayUsed = addTokens(t.dayUsed, delta)
		if p.ModelDaily > 0 {
			used, ok := t.models[p.Model]
			if ok || delta > 0 {
				t.setModel(p.Model, addTokens(used, delta))
			}
		}
	}
	if t.minute == r.Minute && now < t.minute+60 {
		t.minuteUsed = addTokens(t.minuteUsed, delta)
	}
}

// addTokens is a+b kept within 0 and MaxInt64: a settlement never takes a
// budget below zero, and absurd sizes cannot wrap a counter around.
func addTokens(a, b int64) int64 {
	s := a + b
	switch {
	case b > 0 && s < a:
		return math.MaxInt64
	case s < 0:
		return 0
	}
	return s
}

// result reports a decision on v (the view after it) for n tokens.
func (v tokenView) result(now time.Time, p TokenPolicy, n int64, denied TokenLimit) TokenResult {
	res := TokenResult{Allowed: denied == NoTokenLimit, Now: now, DeniedBy: denied}
	dayReset, day := time.Unix(v.dayEnd, 0), time.Duration(v.dayEnd-v.dayStart)*time.Second
	if p.Daily > 0 {
		res.Daily = Usage{Limit: p.Daily, Remaining: max(p.Daily-v.dayUsed, 0), Reset: dayReset, Window: day}
	}
	if p.PerMinute > 0 {
		res.Minute = Usage{Limit: p.PerMinute, Remaining: max(p.PerMinute-v.minuteUsed, 0),
			Reset: time.Unix(v.minute+60, 0), Window: time.Minute}
	}
	if p.ModelDaily > 0 {
		res.Model = Usage{Limit: p.ModelDaily, Remaining: max(p.ModelDaily-v.modelUsed, 0), Reset: dayReset, Window: day}
		if v.modelFull {
			res.Model.Remaining = 0
		}
	}
	switch denied {
	case NoTokenLimit:
		res.Reservation = Reservation{Tokens: n, Day: v.dayStart, Minute: v.minute}
	case MinuteTokens:
		res.RetryAfter = time.Unix(v.minute+60, 0).Sub(now)
	default:
		res.RetryAfter = dayReset.Sub(now)
	}
	return res
}

// maxTokens is the most tokens one reservation or settlement may name:
// Redis's Lua counts in float64, exact for integers up to 2^53 only, and
// both stores take the same sizes.
const maxTokens = 1<<53 - 1

// checkTokens refuses a reservation of fewer than zero tokens, which would
// be a refund in disguise, or of more than can be counted exactly.
func checkTokens(n int64) error {
	if n < 0 || n > maxTokens {
		return fmt.Errorf("ratelimit: cannot reserve %d tokens", n)
	}
	return nil
}

// Reserve charges n tokens to every budget of p if each has room for them,
// or none. It is exact: the check and the charge happen under the key's
// shard lock. It fails only for a size it cannot count (see checkTokens).
func (m *Memory) Reserve(_ context.Context, key string, p TokenPolicy, n int64) (TokenResult, error) {
	if err := checkTokens(n); err != nil {
		return TokenResult{}, err
	}
	now := m.now()
	sh := m.shard(key)
	sh.mu.Lock()
	t := sh.tokenState(key)
	v := t.view(now, p)
	denied := v.decide(p, n)
	var id uint64
	if denied == NoTokenLimit {
		v = t.charge(v, p, n)
		id = reservationIDs.Add(1)
		if t.pending == nil {
			t.pending = make(map[uint64]pendingReservation)
		}
		t.pending[id] = pendingReservation{tokens: n, day: v.dayStart, minute: v.minute, at: now.Unix(), model: p.Model}
	}
	t.lastSeen = now.Unix()
	sh.mu.Unlock()
	res := v.result(now, p, n, denied)
	res.Reservation.ID = id
	return res, nil
}

// Settle replaces reservation r by the tokens used: used - r.Tokens is added
// to the windows r was charged in that are still current, never below zero
// (a negative used counts as none, one over maxTokens as maxTokens).
// Settling an uncounted reservation, one settled before (by id), one given
// back after reservationTTL (then the tokens used are added alone), or one
// of a key reset since, does nothing. It never fails.
func (m *Memory) Settle(_ context.Context, key string, p TokenPolicy, r Reservation, used int64) error {
	m.settleOnce(key, p, r, used)
	return nil
}

// settleOnce is Settle, reporting whether the settlement applied (false
// for one settled before).
func (m *Memory) settleOnce(key string, p TokenPolicy, r Reservation, used int64) bool {
	if r.Uncounted {
		return false
	}
	used = min(max(used, 0), maxTokens)
	now := m.now().Unix()
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tokens[key]
	if t == nil {
		return false
	}
	delta := used - r.Tokens
	if r.ID != 0 {
		pr, ok := t.pending[r.ID]
		if !ok {
			return false
		}
		delete(t.pending, r.ID)
		if pr.reaped { // given back already: charge what was used
			delta = used
		}
	}
	if delta != 0 {
		t.settle(now, p, r, delta)
	}
	t.lastSeen = now
	return true
}

// reapReservations gives back the reservations of t unsettled since before
// cutoff (Unix seconds), in the windows still current at now; a settlement
// that comes later adds the tokens used alone.
func (t *tokenState) reapReservations(now, cutoff int64) {
	for id, pr := range t.pending {
		if pr.reaped {
			if pr.at < now-int64(reapedMarkTTL/time.Second) {
				delete(t.pending, id)
			}
			continue
		}
		if pr.at >= cutoff {
			continue
		}
		p := TokenPolicy{Model: pr.model, ModelDaily: 1}
		if _, ok := t.models[pr.model]; !ok {
			p.ModelDaily = 0
		}
		t.settle(now, p, Reservation{Day: pr.day, Minute: pr.minute}, -pr.tokens)
		pr.at, pr.reaped = now, true
		t.pending[id] = pr
	}
}

// PeekTokens reports where key's budgets stand under p, charging nothing.
func (m *Memory) PeekTokens(_ context.Context, key string, p TokenPolicy) (TokenResult, error) {
	now := m.now()
	sh := m.shard(key)
	sh.mu.Lock()
	var v tokenView
	if t := sh.tokens[key]; t != nil {
		v = t.view(now, p)
	} else {
		v = new(tokenState).view(now, p)
	}
	sh.mu.Unlock()
	res := v.result(now, p, 0, NoTokenLimit)
	res.Reservation = Reservation{}
	return res, nil
}

// mirrorTokens sets a key's token state to what a shared store answered
// (v, after its step), so that counting locally can go on from there when
// the shared store fails.
func (m *Memory) mirrorTokens(key string, p TokenPolicy, v tokenView) {
	now := m.now().Unix()
	sh := m.shard(key)
	sh.mu.Lock()
	t := sh.tokenState(key)
	t.store(v, p)
	t.shared, t.sharedDay = v.dayUsed, v.dayStart
	t.lastSeen = now
	sh.mu.Unlock()
}

// reserveWithin is Reserve while a shared store fails: the daily budget is
// cut to this instance's outage allowance, what the key had left when the
// shared store last answered divided by spenders, or the budget divided by
// spenders for a day it never answered about. The result reports the
// budget's real limit, and as remaining what the allowance leaves.
func (m *Memory) reserveWithin(key string, p TokenPolicy, n, spenders int64) (TokenResult, error) {
	if p.Daily == 0 || spenders <= 1 {
		return m.Reserve(context.Background(), key, p, n)
	}
	q := p
	now := m.now()
	start, _ := p.Window.Bounds(now)
	sh := m.shard(key)
	sh.mu.Lock()
	if t := sh.tokens[key]; t != nil && t.sharedDay == t.view(now, p).dayStart && t.sharedDay == start.Unix() {
		q.Daily = t.shared + max(p.Daily-t.shared, 0)/spenders
	} else {
		q.Daily = p.Daily / spenders
	}
	sh.mu.Unlock()
	res, err := m.Reserve(context.Background(), key, q, n)
	res.Daily.Limit = p.Daily
	return res, err
}

var _ TokenStore = (*Memory)(nil)
