package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// shardCount spreads keys over locks so that requests for different keys
// rarely wait on each other; no lock is ever held across I/O.
const shardCount = 64

// Memory is a Store that keeps counters in this process. Its counters are
// exact: a key's check and increment happen under one lock.
type Memory struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [shardCount]shard
}

type shard struct {
	mu       sync.Mutex
	counters map[string]*counter
	// tokens is each key's token budgets (tokens_memory.go), beside its
	// request counters under the same lock; a key that never reserved
	// tokens has no entry, so request-only keys cost nothing more.
	tokens map[string]*tokenState
}

// counter is one key's state and when it was last used.
type counter struct {
	state
	lastSeen int64 // Unix seconds
}

// NewMemory returns an empty store. now is the clock; nil means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].counters = make(map[string]*counter)
		m.shards[i].tokens = make(map[string]*tokenState)
	}
	return m
}

func (m *Memory) shard(key string) *shard {
	return &m.shards[maphash.String(m.seed, key)%shardCount]
}

// counter is key's request counter, made when it has none; the shard's
// lock is held.
func (sh *shard) counter(key string) *counter {
	c := sh.counters[key]
	if c == nil {
		c = new(counter)
		sh.counters[key] = c
	}
	return c
}

// tokenState is key's token budgets, made when it has none; the shard's
// lock is held.
func (sh *shard) tokenState(key string) *tokenState {
	t := sh.tokens[key]
	if t == nil {
		t = new(tokenState)
		sh.tokens[key] = t
	}
	return t
}

// Take spends one request of key's budget if p allows it. It never fails.
func (m *Memory) Take(_ context.Context, key string, p Policy) (Result, error) {
	now := m.now()
	sh := m.shard(key)
	sh.mu.Lock()
	c := sh.counter(key)
	var res Result
	c.state, res = decide(c.state, now, p)
	c.lastSeen = now.Unix()
	sh.mu.Unlock()
	return res, nil
}

// Peek reports where key stands under p without spending anything.
func (m *Memory) Peek(_ context.Context, key string, p Policy) (Result, error) {
	now := m.now()
	sh := m.shard(key)
	sh.mu.Lock()
	var s state
	if c := sh.counters[key]; c != nil {
		s = c.state
	}
	sh.mu.Unlock()
	return peek(s, now, p), nil
}

// PeekKnown is Peek for a key this memory has counters of; ok is false for
// a key it has none of.
func (m *Memory) PeekKnown(key string, p Policy) (Result, bool) {
	now := m.now()
	sh := m.shard(key)
	sh.mu.Lock()
	c := sh.counters[key]
	var s state
	if c != nil {
		s = c.state
	}
	sh.mu.Unlock()
	if c == nil {
		return Result{}, false
	}
	return peek(s, now, p), true
}

// Mirror sets a key's state to what a shared store answered, so that
// counting locally can go on from there.
func (m *Memory) Mirror(key string, s state) {
	sh := m.shard(key)
	sh.mu.Lock()
	c := sh.counter(key)
	c.state, c.lastSeen = s, m.now().Unix()
	sh.mu.Unlock()
}

// Reset forgets a key's counters, its token budgets included.
func (m *Memory) Reset(key string) {
	sh := m.shard(key)
	sh.mu.Lock()
	delete(sh.counters, key)
	delete(sh.tokens, key)
	sh.mu.Unlock()
}

// Sweep forgets the request counters and token budgets not used since
// before cutoff, each on its own, and returns how many keys it forgot. It
// gives back the token reservations unsettled for reservationTTL.
func (m *Memory) Sweep(cutoff time.Time) int {
	limit := cutoff.Unix()
	now := m.now().Unix()
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for key, t := range sh.tokens {
			if len(t.pending) > 0 {
				t.reapReservations(now, now-int64(reservationTTL/time.Second))
			}
			if t.lastSeen < limit {
				delete(sh.tokens, key)
				if _, ok := sh.counters[key]; !ok {
					n++ // nothing left of the key
				}
			}
		}
		for key, c := range sh.counters {
			if c.lastSeen < limit {
				delete(sh.counters, key)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Len returns the number of keys with request counters or token budgets.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.counters)
		for key := range sh.tokens {
			if _, ok := sh.counters[key]; !ok {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Count returns a key's admitted requests in its current daily window.
func (m *Memory) Count(key string) int64 {
	now := m.now().Unix()
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c := sh.counters[key]; c != nil && now < c.windowEnd {
		return c.count
	}
	return 0
}

var _ Store = (*Memory)(nil)
