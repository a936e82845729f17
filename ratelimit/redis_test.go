package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/moodmnky/caddy-apikey/internal/redistest"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// newRedisStore is one instance's store, with its own client and clock.
// Tests of what Redis answers (not of how slow it may be) use a generous
// timeout: on a loaded machine, or with -race on two cores, a first call
// can take longer than the default 50ms to get a connection, and that is
// not what they test.
func newRedisStore(t *testing.T, addr, mode string, now func() time.Time, timeout ...time.Duration) *RedisStore {
	t.Helper()
	s := &RedisStore{Config: redisconn.Config{Addresses: []string{addr}}, KeyPrefix: "test:", OnFailure: mode, now: now}
	if now == nil {
		s.now = time.Now
	}
	d := DefaultRedisTimeout
	if len(timeout) > 0 {
		d = timeout[0]
	}
	sh, err := openRedis(s, d)
	if err != nil {
		t.Fatal(err)
	}
	s.shared = sh
	t.Cleanup(func() { s.shared.Destruct() })
	return s
}

func TestRedisQuotaAndBurst(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second)
	p := Policy{Daily: 3, Window: DayIn(nil)}
	for i := 1; i <= 3; i++ {
		res, err := s.Take(ctx, "k_a", p)
		if err != nil || !res.Allowed || res.Daily.Remaining != int64(3-i) {
			t.Fatalf("request %d: %+v %v", i, res, err)
		}
	}
	res, err := s.Take(ctx, "k_a", p)
	if err != nil || res.Allowed || res.DeniedBy != DailyLimit || res.RetryAfter <= 0 {
		t.Fatalf("4th: %+v %v", res, err)
	}
	_, end := p.Window.Bounds(time.Now())
	if !res.Daily.Reset.Equal(end) || res.Daily.Window != 24*time.Hour {
		t.Errorf("reset %v window %v, want %v and 24h", res.Daily.Reset, res.Daily.Window, end)
	}
	if peeked, _ := s.Peek(ctx, "k_a", p); peeked.Daily.Remaining != 0 {
		t.Errorf("peek: %+v", peeked.Daily)
	}

	// The key's hash expires a day after its window ends.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ttl, err := c.TTL(ctx, RedisKey("test:", "k_a")).Result()
	if want := time.Until(end) + 24*time.Hour; err != nil || ttl < want-5*time.Second || ttl > want+5*time.Second {
		t.Errorf("TTL %v, want about %v (%v)", ttl, want, err)
	}

	b := Policy{Daily: 100, Window: DayIn(nil), Burst: rate.Rate{Limit: 5, Period: time.Minute}}
	passed := 0
	var last Result
	for i := 0; i < 8; i++ {
		last, _ = s.Take(ctx, "k_burst", b)
		if last.Allowed {
			passed++
		}
	}
	if passed != 5 || last.DeniedBy != BurstLimit || last.RetryAfter < 11*time.Second || last.RetryAfter > 12*time.Second {
		t.Errorf("burst 5/m: %d passed, last %+v", passed, last)
	}
	if last.Daily.Remaining != 95 {
		t.Errorf("burst refusals spent daily quota: %d left", last.Daily.Remaining)
	}
}

// TestRedisExactAcrossInstances: two clients (two instances) sharing one
// Redis give exactly N passes in all under concurrency.
func TestRedisExactAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	a := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second)
	b := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second)
	p := Policy{Daily: 150, Window: DayIn(nil)}
	var passed, failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Take(context.Background(), "k_shared", p)
			switch {
			case err != nil:
				if failed.Add(1) == 1 {
					t.Logf("first failure: %v", err)
				}
			case res.Allowed:
				passed.Add(1)
			}
		}()
	}
	wg.Wait()
	if passed.Load() != 150 || failed.Load() != 0 {
		t.Fatalf("%d passed, %d failed; want 150 and 0", passed.Load(), failed.Load())
	}
}

// TestRedisClockSkew: instances whose clocks differ by hours, across a
// midnight, agree on the window and its reset: Redis's clock decides.
func TestRedisClockSkew(t *testing.T) {
	srv := redistest.Start(t)
	ahead := newRedisStore(t, srv.Addr(), "closed", func() time.Time { return time.Now().Add(20 * time.Hour) }, 2*time.Second)
	behind := newRedisStore(t, srv.Addr(), "closed", func() time.Time { return time.Now().Add(-20 * time.Hour) }, 2*time.Second)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, w := range []Window{DayIn(nil), DayIn(berlin)} {
		p := Policy{Daily: 10, Window: w}
		key := "k_skew_" + w.Location().String()
		r1, err1 := ahead.Take(ctx, key, p)
		r2, err2 := behind.Take(ctx, key, p)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		_, want := w.Bounds(time.Now())
		if !r1.Daily.Reset.Equal(want) || !r2.Daily.Reset.Equal(want) {
			t.Errorf("%s: resets %v and %v, want %v for both", w.Location(), r1.Daily.Reset, r2.Daily.Reset, want)
		}
		if r2.Daily.Remaining != 8 {
			t.Errorf("%s: the instances counted apart: %d left", w.Location(), r2.Daily.Remaining)
		}
	}
}

// TestRedisFailureModes kills and freezes Redis under each on_failure mode.
//
// The limit, 100, makes every lease one unit (leaseCap), so that every
// request of an outage counts locally.
func TestRedisFailureModes(t *testing.T) {
	srv := redistest.Start(t)
	p := Policy{Daily: 100, Window: DayIn(nil)}
	closed := newRedisStore(t, srv.Addr(), "closed", nil)
	open := newRedisStore(t, srv.Addr(), "open", nil)
	local := newRedisStore(t, srv.Addr(), "local", nil)

	outage := func(when string) {
		t.Helper()
		// Where the local instance last saw the key in Redis.
		seen, err := local.Take(ctx, "k_f", p)
		if err != nil {
			t.Fatalf("%s: before: %v", when, err)
		}
		if when == "frozen" {
			srv.Freeze()
		} else {
			srv.Kill()
		}
		var allowance int64
		for i := 1; i <= downAfter+2; i++ {
			start := time.Now()
			if _, err := closed.Take(ctx, "k_f", p); !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: closed: %v, want ErrUnavailable", when, err)
			}
			if res, err := open.Take(ctx, "k_f", p); err != nil || !res.Allowed || !res.Uncounted {
				t.Errorf("%s: open: %+v %v", when, res, err)
			}
			res, err := local.Take(ctx, "k_f", p)
			// Local counting spends the outage allowance: what the key had
			// left at this instance's last lease, shared by the instances
			// spending it then (up to the three stores here).
			if i == 1 {
				allowance = res.Daily.Remaining + 1
				if k := seen.Daily.Remaining / allowance; allowance > seen.Daily.Remaining || k < 1 || k > 3 ||
					seen.Daily.Remaining/k != allowance {
					t.Errorf("%s: outage allowance %d, want %d divided by 1, 2 or 3 instances", when, allowance, seen.Daily.Remaining)
				}
			}
			if err != nil || !res.Allowed || res.Uncounted || res.Daily.Remaining != allowance-int64(i) {
				t.Errorf("%s: local call %d: remaining %d, want %d (%v)", when, i, res.Daily.Remaining, allowance-int64(i), err)
			}
			took := time.Since(start)
			// Each call gives up on Redis after the timeout: one that
			// waited on the frozen server would not return before it
			// thawed. The margin is the scheduler's: -race on two cores
			// shared with a second full run added 340 ms to the 150.
			if took > 3*DefaultRedisTimeout+time.Second {
				t.Errorf("%s: three calls took %v", when, took)
			}
			// Once marked down, nobody waits on Redis.
			if i > downAfter && took > 50*time.Millisecond {
				t.Errorf("%s: call %d after Redis was marked down took %v", when, i, took)
			}
		}
		for _, s := range []*RedisStore{closed, open, local} {
			if !s.shared.down.Load() {
				t.Errorf("%s: %s not marked down after %d failures", when, s.OnFailure, downAfter)
			}
		}
		if when == "frozen" {
			srv.Thaw()
		} else {
			srv.Restart() // empty: the restarted server lost its counts
		}
		for _, s := range []*RedisStore{closed, open, local} {
			waitUp(t, s)
		}
	}
	outage("frozen")
	outage("killed")

	// The five requests counted locally during the second outage are
	// charged to the restarted Redis, with the next lease or by the
	// sweeper (whichever comes first, so the Take's own answer may not
	// show them yet): never lost, counted twice at worst (a charge whose
	// answer was lost is sent again).
	if _, err := local.Take(ctx, "k_f", p); err != nil {
		t.Fatalf("counting did not resume in redis: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	n := redisCount(t, c, "k_f")
	for n < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("the requests counted during the outage never reached redis: it counts %d, want 6", n)
		}
		time.Sleep(10 * time.Millisecond)
		n = redisCount(t, c, "k_f")
	}
	if n > 11 {
		t.Errorf("redis counts %d, more than the outage's requests charged twice", n)
	}
	if res, _ := closed.Take(ctx, "k_f", p); res.Daily.Remaining > 100-n-1 {
		t.Errorf("the instances do not share the restarted redis: %d left after %d counted", res.Daily.Remaining, n)
	}
}

// TestRedisAnsweredErrorsStayWithTheirCall: an error Redis answers (here
// WRONGTYPE on one key) fails that call only; other keys keep counting in
// Redis and the store is not marked down.
func TestRedisAnsweredErrorsStayWithTheirCall(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	c.Set(ctx, RedisKey("test:", "k_broken"), "not a hash", 0)
	p := Policy{Daily: 10, Window: DayIn(nil)}
	for i := 0; i < 5; i++ {
		if _, err := s.Take(ctx, "k_broken", p); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("WRONGTYPE: %v", err)
		}
	}
	if s.shared.down.Load() {
		t.Fatal("an error about one key marked redis down")
	}
	if res, err := s.Take(ctx, "k_fine", p); err != nil || !res.Allowed {
		t.Fatalf("another key after WRONGTYPE: %v", err)
	}
}

// TestRedisRejectsRatesItCannotCount: a rate finer than a microsecond per
// request would count nothing in Redis's microsecond arithmetic.
func TestRedisRejectsRatesItCannotCount(t *testing.T) {
	if _, err := rate.Parse("2000000/s"); err == nil {
		t.Fatal("2000000/s accepted")
	}
	if _, err := rate.Parse("1000000/s"); err != nil {
		t.Fatalf("1000000/s refused: %v", err)
	}
}

// waitUp waits for the store's prober to find Redis back.
func waitSettled(t *testing.T, s *RedisStore) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.shared.settles.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d settlements still queued", s.shared.settles.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitUp(t *testing.T, s *RedisStore) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.shared.down.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: redis never came back", s.OnFailure)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisAnnouncesOncePerWindow: of two instances (two stores with their
// own clients) racing to announce one event for one key, exactly one is
// first; a reset forgets the mark.
func TestRedisAnnouncesOncePerWindow(t *testing.T) {
	srv := redistest.Start(t)
	a := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	b := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second) // another pool, as another instance
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	var firsts atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			if first, err := s.FirstToAnnounce(ctx, "k_ann", "warning80", until); err != nil {
				t.Error(err)
			} else if first {
				firsts.Add(1)
			}
		}()
	}
	wg.Wait()
	if firsts.Load() != 1 {
		t.Fatalf("%d instances were first", firsts.Load())
	}
	if first, _ := a.FirstToAnnounce(ctx, "k_ann", "warning90", until); !first {
		t.Error("another mark of the same key was taken")
	}
	if err := b.Reset(ctx, "k_ann"); err != nil {
		t.Fatal(err)
	}
	if first, _ := a.FirstToAnnounce(ctx, "k_ann", "warning80", until); !first {
		t.Error("a reset did not forget the mark")
	}
}
