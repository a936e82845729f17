package ratelimit

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
)

// redisCount is n in a key's hash: requests counted plus units leased.
func redisCount(t *testing.T, c *redis.Client, key string) int64 {
	t.Helper()
	n, err := c.HGet(ctx, RedisKey("test:", key), "n").Int64()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return n
}

// held is the units a store holds for key, unspent.
func held(s *RedisStore, key string) int64 {
	ls := s.shared.leases.shard(key)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l := ls.m[key]; l != nil {
		return l.left
	}
	return 0
}

// TestLeasesNeverPassTheLimit: three instances (three pools with their own
// clients and ids) take 6,000 requests of a key allowed 2,000, concurrently.
// Leases grow (the cap is 20 here), yet at every moment Redis's count, the
// units leased and spent, stays within the limit; in the end the requests
// admitted and the units still held add up to Redis's count, and once the
// instances shut down (returning what they hold) Redis counts exactly the
// requests admitted: 2,000.
func TestLeasesNeverPassTheLimit(t *testing.T) {
	const limit, requests = 2000, 6000
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	stores := []*RedisStore{
		newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second),
		newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second),
		newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second),
	}
	p := Policy{Daily: limit, Window: DayIn(nil)}
	var passed, failed, over atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { // Redis's count, watched throughout
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, _ := c.HGet(ctx, RedisKey("test:", "k_l"), "n").Int64(); n > limit {
				over.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= requests {
					return
				}
				res, err := stores[i%3].Take(context.Background(), "k_l", p)
				switch {
				case err != nil:
					failed.Add(1)
				case res.Allowed:
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-watched
	if over.Load() > 0 || passed.Load() > limit || failed.Load() != 0 {
		t.Fatalf("redis counted up to %d, %d passed, %d failed; the limit is %d", over.Load(), passed.Load(), failed.Load(), limit)
	}
	var holding int64
	for _, s := range stores {
		holding += held(s, "k_l")
	}
	if n := redisCount(t, c, "k_l"); passed.Load()+holding != n {
		t.Errorf("%d admitted + %d held = %d, redis counts %d", passed.Load(), holding, passed.Load()+holding, n)
	}
	if passed.Load() != limit {
		t.Errorf("%d passed of %d requests; want the whole limit, %d, with leases spent to the end", passed.Load(), requests, limit)
	}
	for _, s := range stores {
		s.shared.Destruct()
	}
	if n := redisCount(t, c, "k_l"); n != passed.Load() {
		t.Errorf("after shutdown redis counts %d, %d admitted", n, passed.Load())
	}
}

// TestLeaseGoesBackWhenIdle: a lease grows with fast traffic; left idle, its
// units go back to Redis and the instance stops counting as a spender;
// shut down, an instance returns what it holds.
func TestLeaseGoesBackWhenIdle(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	s := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	p := Policy{Daily: 100000, Window: DayIn(nil)}
	for range 200 {
		if res, err := s.Take(ctx, "k_idle", p); err != nil || !res.Allowed {
			t.Fatal(res, err)
		}
	}
	n := redisCount(t, c, "k_idle")
	if n <= 200 || held(s, "k_idle") != n-200 {
		t.Fatalf("redis counts %d for 200 requests, %d held: the lease did not grow", n, held(s, "k_idle"))
	}
	// The RateLimit headers count held units as not spent.
	if res, _ := s.Peek(ctx, "k_idle", p); res.Daily.Remaining != 100000-200 {
		t.Errorf("peek: %d remaining, want %d", res.Daily.Remaining, 100000-200)
	}
	deadline := time.Now().Add(leaseIdle + 3*leaseSweepEvery)
	for redisCount(t, c, "k_idle") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("an idle lease was not given back: redis counts %d for 200 requests", redisCount(t, c, "k_idle"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	fields, _ := c.HKeys(ctx, RedisKey("test:", "k_idle")).Result()
	for _, f := range fields {
		if strings.HasPrefix(f, "i:") {
			t.Errorf("the instance still counts as a spender after giving its lease back: %v", fields)
		}
	}

	// Shutdown: held units go back.
	b := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	for range 50 {
		b.Take(ctx, "k_stop", p)
	}
	if redisCount(t, c, "k_stop") == 50 {
		t.Fatal("no units held to give back")
	}
	b.shared.Destruct()
	if n := redisCount(t, c, "k_stop"); n != 50 {
		t.Errorf("after shutdown redis counts %d for 50 requests", n)
	}
}

// TestLeaseSharesWhatRemains: a grant is at most the remaining budget
// divided among the instances spending the key, at least one unit while
// any remains, none after; an instance silent for spenderStale no longer
// counts.
func TestLeaseSharesWhatRemains(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	a := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	b := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	p := Policy{Daily: 10000, Window: DayIn(nil)}
	now := time.Now()
	if _, err := b.shared.grant(ctx, "k_share", p, now, 1, 0, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	c.HSet(ctx, RedisKey("test:", "k_share"), "n", 10000-9)
	for _, step := range []struct {
		want, units, spenders int64
	}{
		{100, 4, 2}, // floor(9 / 2)
		{100, 2, 2}, // floor(5 / 2)
		{100, 1, 2}, // floor(3 / 2)
		{100, 1, 2}, // 2 / 2
		{100, 1, 2}, // at least one while any remains
		{100, 0, 2}, // none left
	} {
		g, err := a.shared.grant(ctx, "k_share", p, now, step.want, 0, 0, 0, 0)
		if err != nil || g.units != step.units || g.spenders != step.spenders || g.n > p.Daily {
			t.Fatalf("grant %+v, want %d units among %d (%v)", g, step.units, step.spenders, err)
		}
	}
	// Units returned come off the count, in their window only.
	g, _ := a.shared.grant(ctx, "k_share", p, now, 0, 3, 12345, 0, 0)
	if g.n != 10000 {
		t.Errorf("units of another window were returned: n %d", g.n)
	}
	// A spender silent for spenderStale is dropped by the next grant.
	c.HSet(ctx, RedisKey("test:", "k_share"), b.shared.instanceField, time.Now().Add(-2*spenderStale).UnixMilli(), "n", 0)
	g, _ = a.shared.grant(ctx, "k_share", p, now, 10, 0, 0, 0, 0)
	if g.spenders != 1 || g.units != 10 {
		t.Errorf("with the other instance gone: %+v", g)
	}
	if ok, _ := c.HExists(ctx, RedisKey("test:", "k_share"), b.shared.instanceField).Result(); ok {
		t.Error("a stale spender was not removed")
	}
}

// TestLeaseWindowEnds: units of a window that ended are not spent in the
// next; the next request takes a new lease.
func TestLeaseWindowEnds(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	s := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	p := Policy{Daily: 100000, Window: DayIn(nil)}
	for range 100 {
		s.Take(ctx, "k_roll", p)
	}
	if held(s, "k_roll") == 0 {
		t.Fatal("no units held")
	}
	// The lease's window ends (as seen from this instance).
	ls := s.shared.leases.shard("k_roll")
	ls.mu.Lock()
	l := ls.m["k_roll"]
	l.we = time.Now().Add(time.Duration(l.offset)).Unix()
	ls.mu.Unlock()
	before := redisCount(t, c, "k_roll")
	res, err := s.Take(ctx, "k_roll", p)
	if err != nil || !res.Allowed || redisCount(t, c, "k_roll") == before {
		t.Errorf("a unit of an ended window was spent: %+v %v", res, err)
	}
	_, end := p.Window.Bounds(time.Now())
	if !res.Daily.Reset.Equal(end) {
		t.Errorf("reset %v, want %v", res.Daily.Reset, end)
	}
}

// TestLeaseOutageAllowance: while Redis is down, an instance spends what it
// holds, then at most its outage allowance: what the key had left at the
// last grant divided by the instances spending it; a key it never leased
// gets the limit divided by the most spenders it saw. What it spent is
// charged to Redis when Redis answers again.
func TestLeaseOutageAllowance(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	a := newRedisStore(t, srv.Addr(), "local", nil, 200*time.Millisecond)
	b := newRedisStore(t, srv.Addr(), "local", nil, 200*time.Millisecond)
	p := Policy{Daily: 100, Window: DayIn(nil)} // leases of one unit
	for range 10 {
		a.Take(ctx, "k_out", p)
		b.Take(ctx, "k_out", p)
	}
	srv.Kill()
	passed := 0
	for range 100 {
		if res, err := a.Take(ctx, "k_out", p); err == nil && res.Allowed {
			passed++
		}
	}
	if passed != (100-20)/2 {
		t.Errorf("%d passed during the outage, want the allowance (100 - 20) / 2 = %d", passed, (100-20)/2)
	}
	// A key never leased: the limit divided by the most spenders seen.
	passed = 0
	for range 100 {
		if res, err := a.Take(ctx, "k_new", p); err == nil && res.Allowed {
			passed++
		}
	}
	if passed != 100/2 {
		t.Errorf("%d passed for a key never leased, want 100 / 2 = 50", passed)
	}
	srv.Restart() // empty
	waitUp(t, a)
	// The next lease call charges what was spent.
	res, err := a.Take(ctx, "k_out", p)
	if err != nil || !res.Allowed || res.Daily.Remaining != 100-40-1 {
		t.Errorf("after the outage: %+v %v, want %d remaining", res.Daily, err, 100-40-1)
	}
	// The sweeper charges what a key with no traffic since owes.
	deadline := time.Now().Add(5 * time.Second)
	for redisCount(t, c, "k_new") != 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the 50 requests counted locally for k_new were not charged: redis counts %d", redisCount(t, c, "k_new"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkTakeLeased is a request counted on Redis from a lease: once the
// lease has grown, a round trip per thousand requests and no allocation
// per request.
func BenchmarkTakeLeased(b *testing.B) {
	srv := redistest.Start(b)
	s := &RedisStore{KeyPrefix: "bench:", OnFailure: "closed", now: time.Now}
	s.Addresses = []string{srv.Addr()}
	sh, err := openRedis(s, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	s.shared = sh
	defer sh.Destruct()
	p := Policy{Daily: 1 << 40, Window: DayIn(nil)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res, err := s.Take(context.Background(), "k_bench", p); err != nil || !res.Allowed {
				b.Fatal(res, err)
			}
		}
	})
}

// TestLeaseStallSendsOneGrant: requests that find a key's lease empty while
// its grant is in flight wait for that grant instead of sending their own,
// so a Redis that stalls past the timeout costs at most one lease per key
// and instance (counted in Redis, spent by nobody), not one per request.
func TestLeaseStallSendsOneGrant(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	// A timeout a loaded machine's Redis meets while the lease grows (the
	// default 50 ms is not always); the stall below outlasts it all the same.
	s := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second)
	p := Policy{Daily: 1_000_000, Window: DayIn(nil)}
	// Grow the lease, then spend what it holds.
	for range 500 {
		if res, err := s.Take(ctx, "k_stall", p); err != nil || !res.Allowed {
			t.Fatal(res, err)
		}
	}
	for held(s, "k_stall") > 0 {
		s.Take(ctx, "k_stall", p)
	}
	ls := s.shared.leases.shard("k_stall")
	ls.mu.Lock()
	lease := ls.m["k_stall"].want * 2 // at most the next grant's size
	ls.mu.Unlock()
	// Open the pool's connections, as a busy instance has them: a request
	// on a new connection would not reach a stalled Redis at all.
	var open sync.WaitGroup
	for range 64 {
		open.Add(1)
		go func() {
			defer open.Done()
			s.shared.client.BLPop(context.Background(), 100*time.Millisecond, "test:nothing")
		}()
	}
	open.Wait()
	before := redisCount(t, c, "k_stall")

	srv.Freeze()
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := s.Take(ctx, "k_stall", p); err == nil && res.Allowed {
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	srv.Thaw()
	if admitted.Load() != 0 {
		t.Errorf("%d requests admitted by a closed store while Redis stalled", admitted.Load())
	}
	// The grants sent before the stall run once Redis wakes (on
	// connections it accepts then): wait until the count stops moving.
	deadline := time.Now().Add(5 * time.Second)
	last, still := before, 0
	for still < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the count never settled after the stall")
		}
		time.Sleep(50 * time.Millisecond)
		n := redisCount(t, c, "k_stall")
		if n == last && n != before {
			still++
		} else {
			last, still = n, 0
		}
	}
	if lost := redisCount(t, c, "k_stall") - before; lost > min(lease, leaseCap(p.Daily)) {
		t.Errorf("a stall lost %d units, more than one lease (%d): a grant per waiting request", lost, lease)
	}
}
