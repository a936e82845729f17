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
}

// counter is one key's state: O(1) memory whatever its traffic.
type counter struct {
	windowStart int64 // Unix seconds: start of the daily window count belongs to
	count       int64 // requests admitted in that window
	tat         int64 // GCRA theoretical arrival time, Unix nanoseconds
	lastSeen    int64 // Unix seconds
}

// NewMemory returns an empty store. now is the clock; nil means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].counters = make(map[string]*counter)
	}
	return m
}

func (m *Memory) shard(key string) *shard {
	return &m.shards[maphash.String(m.seed, key)%shardCount]
}

// Take spends one request of key's budget if p allows it. It never fails.
func (m *Memory) Take(_ context.Context, key string, p Policy) (Result, error) {
	now := m.now()
	start, end := p.Window.Bounds(now)
	sh := m.shard(key)
	sh.mu.Lock()
	c := sh.counters[key]
	if c == nil {
		c = new(counter)
		sh.counters[key] = c
	}
	res := c.take(now, start, end, p)
	sh.mu.Unlock()
	return res, nil
}

// take is the whole decision for one request: both limits are checked
// before either is charged, so a refused request spends nothing.
func (c *counter) take(now, start, end time.Time, p Policy) Result {
	// A later window starts a new count. An earlier one (another route's
	// time zone) keeps counting in the current window rather than flip-flop.
	if ws := start.Unix(); ws > c.windowStart {
		c.windowStart, c.count = ws, 0
	}
	nowNs := now.UnixNano()
	c.lastSeen = now.Unix()

	res := Result{Daily: Usage{Limit: p.Daily, Reset: end, Window: end.Sub(start)}}
	dailyOK := c.count < p.Daily

	burstOK, newTAT, interval := true, int64(0), int64(0)
	if !p.Burst.IsZero() {
		// GCRA: each request pushes the theoretical arrival time one
		// emission interval on; a burst of up to Limit fits in one Period.
		interval = int64(p.Burst.Period) / p.Burst.Limit
		newTAT = max(c.tat, nowNs) + interval
		burstOK = newTAT-nowNs <= int64(p.Burst.Period)
	}

	if dailyOK && burstOK {
		res.Allowed = true
		c.count++
		if interval > 0 {
			c.tat = newTAT
		}
	}

	res.Daily.Remaining = max(p.Daily-c.count, 0)
	if interval > 0 {
		backlog := max(c.tat-nowNs, 0) // time until the bucket is full again
		res.Burst = Usage{
			Limit:     p.Burst.Limit,
			Remaining: max((int64(p.Burst.Period)-backlog)/interval, 0),
			Reset:     now.Add(time.Duration(backlog)),
			Window:    p.Burst.Period,
		}
	}

	switch {
	case res.Allowed:
	case !dailyOK:
		res.DeniedBy, res.RetryAfter = DailyLimit, end.Sub(now)
	default:
		res.DeniedBy, res.RetryAfter = BurstLimit, time.Duration(newTAT-nowNs-int64(p.Burst.Period))
	}
	return res
}

// Reset forgets a key's counters.
func (m *Memory) Reset(key string) {
	sh := m.shard(key)
	sh.mu.Lock()
	delete(sh.counters, key)
	sh.mu.Unlock()
}

// Sweep forgets keys not seen since before cutoff and returns how many.
func (m *Memory) Sweep(cutoff time.Time) int {
	limit := cutoff.Unix()
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
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

// Len returns the number of keys with counters.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.counters)
		sh.mu.Unlock()
	}
	return n
}

// Count returns a key's admitted requests in the window that holds now.
func (m *Memory) Count(key string, w Window) int64 {
	start, _ := w.Bounds(m.now())
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c := sh.counters[key]; c != nil && c.windowStart >= start.Unix() {
		return c.count
	}
	return 0
}

var _ Store = (*Memory)(nil)
