package ratelimit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
)

// tokenStores is each kind of store, for tests that hold for both: a
// Memory on the real clock and a RedisStore on a real redis-server.
func tokenStores(t *testing.T) map[string]TokenStore {
	t.Helper()
	srv := redistest.Start(t)
	return map[string]TokenStore{
		"memory": NewMemory(nil),
		"redis":  newRedisStore(t, srv.Addr(), "closed", nil, time.Second),
	}
}

// awayFromMinuteEnd waits, near the end of a UTC minute, for the next one,
// so that a test on the real clock sees one minute window throughout.
func awayFromMinuteEnd() {
	if now := time.Now(); now.Second() >= 55 {
		time.Sleep(now.Truncate(time.Minute).Add(time.Minute + 10*time.Millisecond).Sub(now))
	}
}

func mustReserve(t *testing.T, s TokenStore, key string, p TokenPolicy, n int64) TokenResult {
	t.Helper()
	res, err := s.Reserve(ctx, key, p, n)
	if err != nil {
		t.Fatalf("reserve %d: %v", n, err)
	}
	return res
}

func mustPeek(t *testing.T, s TokenStore, key string, p TokenPolicy) TokenResult {
	t.Helper()
	res, err := s.PeekTokens(ctx, key, p)
	if err != nil {
		t.Fatalf("peek: %v", err)
	}
	return res
}

// TestTokensAllOrNone: a reservation charges every budget or none, and the
// first budget without room (daily, minute, model) is the one named.
func TestTokensAllOrNone(t *testing.T) {
	for name, s := range tokenStores(t) {
		t.Run(name, func(t *testing.T) {
			awayFromMinuteEnd()
			p := TokenPolicy{Daily: 100, Window: DayIn(nil), PerMinute: 1000, Model: "gpt", ModelDaily: 30}
			res := mustReserve(t, s, "k_all", p, 20)
			if !res.Allowed || res.Daily.Remaining != 80 || res.Minute.Remaining != 980 || res.Model.Remaining != 10 ||
				res.Reservation.Tokens != 20 || res.Reservation.Day == 0 || res.Reservation.Minute%60 != 0 {
				t.Fatalf("first: %+v", res)
			}
			res = mustReserve(t, s, "k_all", p, 20)
			if res.Allowed || res.DeniedBy != ModelTokens || res.RetryAfter != res.Model.Reset.Sub(res.Now) || res.RetryAfter <= 0 {
				t.Fatalf("over the model budget: %+v", res)
			}
			if res.Reservation != (Reservation{}) {
				t.Errorf("a refusal carries a reservation: %+v", res.Reservation)
			}
			peek := mustPeek(t, s, "k_all", p)
			if peek.Daily.Remaining != 80 || peek.Minute.Remaining != 980 || peek.Model.Remaining != 10 {
				t.Fatalf("a refusal charged something: %+v", peek)
			}
			// Another model has its own budget, and the day's is shared.
			other := p
			other.Model = "claude"
			if res := mustReserve(t, s, "k_all", other, 20); !res.Allowed || res.Daily.Remaining != 60 || res.Model.Remaining != 10 {
				t.Fatalf("another model: %+v", res)
			}
			// Daily and model both lack room: daily is named.
			res = mustReserve(t, s, "k_all", p, 70)
			if res.Allowed || res.DeniedBy != DailyTokens || res.RetryAfter != res.Daily.Reset.Sub(res.Now) {
				t.Fatalf("over daily and model: %+v", res)
			}
			// Budgets the policy lacks report a zero Usage.
			if res := mustPeek(t, s, "k_all", TokenPolicy{Daily: 100, Window: DayIn(nil)}); res.Minute != (Usage{}) || res.Model != (Usage{}) || res.Daily.Remaining != 60 {
				t.Errorf("daily only: %+v", res)
			}
		})
	}
}

// TestTokensEachBudgetRefuses, on a clock the test moves: each budget
// refuses alone, with Retry-After until its window ends.
func TestTokensEachBudgetRefuses(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 22, 0, 30, 0, time.UTC))
	m := NewMemory(clock.Now)
	untilMidnight := time.Hour + 59*time.Minute + 30*time.Second

	daily := TokenPolicy{Daily: 10, Window: DayIn(nil)}
	res := mustReserve(t, m, "k_d", daily, 11)
	if res.Allowed || res.DeniedBy != DailyTokens || res.RetryAfter != untilMidnight || res.Daily.Remaining != 10 ||
		!res.Daily.Reset.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) || res.Daily.Window != 24*time.Hour {
		t.Fatalf("daily: %+v", res)
	}
	if res := mustReserve(t, m, "k_d", daily, 10); !res.Allowed || res.Daily.Remaining != 0 {
		t.Fatalf("daily, exactly the budget: %+v", res)
	}
	if res := mustReserve(t, m, "k_d", daily, 0); !res.Allowed {
		t.Fatalf("zero tokens refused: %+v", res)
	}

	minute := TokenPolicy{PerMinute: 10, Window: DayIn(nil)}
	mustReserve(t, m, "k_m", minute, 6)
	res = mustReserve(t, m, "k_m", minute, 5)
	if res.Allowed || res.DeniedBy != MinuteTokens || res.RetryAfter != 30*time.Second || res.Minute.Remaining != 4 ||
		!res.Minute.Reset.Equal(time.Date(2026, 11, 27, 22, 1, 0, 0, time.UTC)) || res.Minute.Window != time.Minute {
		t.Fatalf("minute: %+v", res)
	}
	clock.Advance(30 * time.Second)
	if res := mustReserve(t, m, "k_m", minute, 5); !res.Allowed || res.Minute.Remaining != 5 {
		t.Fatalf("next minute: %+v", res)
	}

	model := TokenPolicy{Model: "gpt", ModelDaily: 10, Window: DayIn(nil)}
	res = mustReserve(t, m, "k_model", model, 11)
	if res.Allowed || res.DeniedBy != ModelTokens || res.RetryAfter != untilMidnight-30*time.Second {
		t.Fatalf("model: %+v", res)
	}

	both := TokenPolicy{Daily: 10, PerMinute: 5, Window: DayIn(nil)}
	if res := mustReserve(t, m, "k_both", both, 11); res.DeniedBy != DailyTokens {
		t.Errorf("daily and minute lack room: %v", res.DeniedBy)
	}
	if res := mustReserve(t, m, "k_both", both, 6); res.DeniedBy != MinuteTokens {
		t.Errorf("minute lacks room: %v", res.DeniedBy)
	}
	for _, n := range []int64{-1, maxTokens + 1} {
		if _, err := m.Reserve(ctx, "k_both", both, n); err == nil {
			t.Errorf("a reservation of %d tokens was taken", n)
		}
	}
}

// TestRedisTokensEachBudgetRefuses: the same in Redis, on its clock.
func TestRedisTokensEachBudgetRefuses(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	awayFromMinuteEnd()
	_, end := DayIn(nil).Bounds(time.Now())
	res := mustReserve(t, s, "k_d", TokenPolicy{Daily: 10, Window: DayIn(nil)}, 11)
	if res.Allowed || res.DeniedBy != DailyTokens || !res.Daily.Reset.Equal(end) || res.RetryAfter != end.Sub(res.Now) {
		t.Fatalf("daily: %+v", res)
	}
	minute := TokenPolicy{PerMinute: 10, Window: DayIn(nil)}
	mustReserve(t, s, "k_m", minute, 6)
	res = mustReserve(t, s, "k_m", minute, 5)
	if res.Allowed || res.DeniedBy != MinuteTokens || res.RetryAfter <= 0 || res.RetryAfter > time.Minute ||
		res.RetryAfter != res.Minute.Reset.Sub(res.Now) || res.Minute.Remaining != 4 {
		t.Fatalf("minute: %+v", res)
	}
	res = mustReserve(t, s, "k_model", TokenPolicy{Model: "gpt", ModelDaily: 10, Window: DayIn(nil)}, 11)
	if res.Allowed || res.DeniedBy != ModelTokens || res.RetryAfter != end.Sub(res.Now) {
		t.Fatalf("model: %+v", res)
	}
	if _, err := s.Reserve(ctx, "k_model", TokenPolicy{Daily: 1}, -1); err == nil {
		t.Error("a negative reservation was taken")
	}
}

// TestTokensSettle: a settlement corrects up and down, never below zero,
// and only in windows still current.
func TestTokensSettle(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	m := NewMemory(clock.Now)
	p := TokenPolicy{Daily: 1000, PerMinute: 1000, Model: "gpt", ModelDaily: 1000, Window: DayIn(nil)}
	used := func(key string) (day, minute, model int64) {
		t.Helper()
		res := mustPeek(t, m, key, p)
		return 1000 - res.Daily.Remaining, 1000 - res.Minute.Remaining, 1000 - res.Model.Remaining
	}
	check := func(what, key string, day, minute, model int64) {
		t.Helper()
		if d, mi, mo := used(key); d != day || mi != minute || mo != model {
			t.Errorf("%s: used %d/%d/%d (day/minute/model), want %d/%d/%d", what, d, mi, mo, day, minute, model)
		}
	}

	r := mustReserve(t, m, "k_s", p, 100).Reservation
	m.Settle(ctx, "k_s", p, r, 30)
	check("settled down", "k_s", 30, 30, 30)
	r2 := mustReserve(t, m, "k_s", p, 100).Reservation
	m.Settle(ctx, "k_s", p, r2, 250)
	check("settled up", "k_s", 280, 280, 280)

	r = mustReserve(t, m, "k_zero", p, 50).Reservation
	m.Settle(ctx, "k_zero", p, r, 0)
	m.Settle(ctx, "k_zero", p, r, -7) // settled twice, and a negative use: still not below zero
	check("below zero", "k_zero", 0, 0, 0)

	m.Settle(ctx, "k_s", p, Reservation{Tokens: 5, Uncounted: true}, 1000)
	check("uncounted", "k_s", 280, 280, 280)

	// A new minute owes nothing to the last one; the day still does.
	r = mustReserve(t, m, "k_min", p, 100).Reservation
	clock.Advance(61 * time.Second)
	m.Settle(ctx, "k_min", p, r, 300)
	check("minute rolled", "k_min", 300, 0, 300)

	// A new day owes nothing to the last one.
	clock.Set(time.Date(2026, 11, 27, 23, 59, 30, 0, time.UTC))
	r = mustReserve(t, m, "k_day", p, 100).Reservation
	clock.Set(time.Date(2026, 11, 28, 0, 0, 10, 0, time.UTC))
	mustReserve(t, m, "k_day", p, 10)
	m.Settle(ctx, "k_day", p, r, 1000)
	check("day rolled", "k_day", 10, 10, 10)

	// A key reset since has nothing to correct.
	r = mustReserve(t, m, "k_reset", p, 100).Reservation
	m.Reset("k_reset")
	m.Settle(ctx, "k_reset", p, r, 500)
	check("reset", "k_reset", 0, 0, 0)
}

// TestRedisTokensSettleAndLayout: settlements in Redis, the hash's fields
// and expiry, and a new day forgetting the models.
func TestRedisTokensSettleAndLayout(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	awayFromMinuteEnd()
	p := TokenPolicy{Daily: 1000, PerMinute: 1000, Model: "gpt", ModelDaily: 1000, Window: DayIn(nil)}
	hash := TokensRedisKey("test:", "k_s")
	fields := func() map[string]string {
		t.Helper()
		h, err := c.HGetAll(ctx, hash).Result()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	check := func(what string, day, minute, model string) {
		t.Helper()
		if h := fields(); h["du"] != day || h["mu"] != minute || h["m:gpt"] != model {
			t.Errorf("%s: %v, want du %s mu %s m:gpt %s", what, h, day, minute, model)
		}
	}

	r := mustReserve(t, s, "k_s", p, 100).Reservation
	start, end := p.Window.Bounds(time.Now())
	h := fields()
	if h["ds"] != strconv.FormatInt(start.Unix(), 10) || h["de"] != strconv.FormatInt(end.Unix(), 10) ||
		h["ms"] != strconv.FormatInt(r.Minute, 10) || r.Day != start.Unix() || len(h) != tokenFixedFields+1 {
		t.Fatalf("layout: %v, reservation %+v", h, r)
	}
	ttl, err := c.TTL(ctx, hash).Result()
	if want := time.Until(end) + 24*time.Hour; err != nil || ttl < want-5*time.Second || ttl > want+5*time.Second {
		t.Errorf("TTL %v, want about %v (%v)", ttl, want, err)
	}
	if err := s.Settle(ctx, "k_s", p, r, 30); err != nil {
		t.Fatal(err)
	}
	check("settled down", "30", "30", "30")
	r2 := mustReserve(t, s, "k_s", p, 100).Reservation
	s.Settle(ctx, "k_s", p, r2, 250)
	check("settled up", "280", "280", "280")
	// Settling a reservation again does nothing: once per id.
	s.Settle(ctx, "k_s", p, r2, 0)
	s.Settle(ctx, "k_s", p, r2, 0)
	check("settled twice", "280", "280", "280")
	// A settlement never takes a budget below zero.
	r3 := mustReserve(t, s, "k_s", p, 100).Reservation
	c.HSet(ctx, hash, "du", 20, "mu", 20, "m:gpt", 20)
	s.Settle(ctx, "k_s", p, r3, 0)
	check("not below zero", "0", "0", "0")
	if res := mustPeek(t, s, "k_s", p); res.Daily.Remaining != 1000 || res.Model.Remaining != 1000 {
		t.Errorf("peek after settling to zero: %+v", res)
	}

	// Reservations of windows no longer current correct nothing there.
	r = mustReserve(t, s, "k_s", p, 100).Reservation
	gone := r
	gone.Day -= 86400
	s.Settle(ctx, "k_s", p, gone, 500)
	check("day gone", "100", "500", "100")
	r = mustReserve(t, s, "k_s", p, 100).Reservation
	gone = r
	gone.Minute -= 60
	s.Settle(ctx, "k_s", p, gone, 200)
	check("minute gone", "300", "600", "300")

	// Yesterday's hash: a reservation starts a new day without its models.
	c.HSet(ctx, hash, "ds", start.Unix()-86400, "de", start.Unix(), "du", 900, "m:old", 50, "m:gpt", 900)
	if res := mustReserve(t, s, "k_s", p, 7); !res.Allowed || res.Daily.Remaining != 993 || res.Model.Remaining != 993 {
		t.Fatalf("new day: %+v", res)
	}
	if h := fields(); h["m:old"] != "" || h["du"] != "7" || h["m:gpt"] != "7" {
		t.Errorf("new day kept yesterday: %v", h)
	}
	// Settling a reservation of a reset key writes nothing back.
	r = mustReserve(t, s, "k_s", p, 10).Reservation
	if err := s.Reset(ctx, "k_s"); err != nil {
		t.Fatal(err)
	}
	if err := s.Settle(ctx, "k_s", p, r, 40); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, hash).Result(); n != 0 {
		t.Errorf("a settlement recreated a reset key: %v", fields())
	}
}

// TestTokensExact: 1,000 concurrent reservations of 10 tokens against a
// daily budget of 3,000 pass exactly 300 times: in one Memory, and on two
// RedisStores with their own clients (two instances) sharing one Redis.
func TestTokensExact(t *testing.T) {
	srv := redistest.Start(t)
	// A timeout for 1,000 calls queued at once on two loaded cores under
	// -race (5 s was too short once): this test is about exactness.
	a := newRedisStore(t, srv.Addr(), "closed", nil, 30*time.Second)
	b := newRedisStore(t, srv.Addr(), "closed", nil, 30*time.Second)
	mem := NewMemory(nil)
	for name, stores := range map[string][2]TokenStore{"memory": {mem, mem}, "redis": {a, b}} {
		t.Run(name, func(t *testing.T) {
			p := TokenPolicy{Daily: 3000, Window: DayIn(nil), Model: "gpt", ModelDaily: 10000}
			var passed, failed atomic.Int64
			var wg sync.WaitGroup
			// 200 in flight at once: more than the pool's connections,
			// fewer than wait past its 5 s safety net for one on two
			// loaded cores under -race.
			inFlight := make(chan struct{}, 200)
			for i := range 1000 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					inFlight <- struct{}{}
					defer func() { <-inFlight }()
					res, err := stores[i%2].Reserve(ctx, "k_exact", p, 10)
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
			if passed.Load() != 300 || failed.Load() != 0 {
				t.Fatalf("%d passed, %d failed; want 300 and 0", passed.Load(), failed.Load())
			}
			if res := mustPeek(t, stores[0], "k_exact", p); res.Daily.Remaining != 0 || res.Model.Remaining != 7000 {
				t.Errorf("after: %+v", res)
			}
		})
	}
}

// TestTokensModelCap: a key counts at most maxTokenModels models; one more
// finds no room until the day rolls, while those counted go on.
func TestTokensModelCap(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	srv := redistest.Start(t)
	for name, s := range map[string]TokenStore{"memory": NewMemory(clock.Now), "redis": newRedisStore(t, srv.Addr(), "closed", nil, time.Second)} {
		t.Run(name, func(t *testing.T) {
			p := TokenPolicy{Daily: 1 << 20, ModelDaily: 100, Window: DayIn(nil)}
			for i := range maxTokenModels {
				p.Model = fmt.Sprint("model-", i)
				if res := mustReserve(t, s, "k_cap", p, 1); !res.Allowed {
					t.Fatalf("model %d: %+v", i, res)
				}
			}
			p.Model = "one-too-many"
			if res := mustReserve(t, s, "k_cap", p, 1); res.Allowed || res.DeniedBy != ModelTokens || res.Model.Remaining != 0 {
				t.Fatalf("model %d: %+v", maxTokenModels, res)
			}
			p.Model = "model-0"
			if res := mustReserve(t, s, "k_cap", p, 1); !res.Allowed || res.Model.Remaining != 98 {
				t.Fatalf("a counted model: %+v", res)
			}
			// A policy without a model budget counts no model.
			if res := mustReserve(t, s, "k_cap", TokenPolicy{Daily: 1 << 20, Model: "free"}, 1); !res.Allowed {
				t.Fatalf("no model budget: %+v", res)
			}
		})
	}
	clock.Advance(24 * time.Hour)
	m := NewMemory(clock.Now)
	p := TokenPolicy{ModelDaily: 100, Window: DayIn(nil)}
	for i := range maxTokenModels {
		p.Model = fmt.Sprint("model-", i)
		mustReserve(t, m, "k_cap", p, 1)
	}
	clock.Advance(24 * time.Hour)
	p.Model = "one-too-many"
	if res := mustReserve(t, m, "k_cap", p, 1); !res.Allowed {
		t.Fatalf("a new day did not forget the models: %+v", res)
	}
}

// TestTokensResetAndSweep: Reset forgets token budgets in both stores;
// Sweep forgets those of keys not seen since the cutoff.
func TestTokensResetAndSweep(t *testing.T) {
	p := TokenPolicy{Daily: 100, Window: DayIn(nil)}
	for name, s := range tokenStores(t) {
		t.Run(name, func(t *testing.T) {
			mustReserve(t, s, "k_r", p, 60)
			var err error
			switch s := s.(type) {
			case *Memory:
				s.Reset("k_r")
			case *RedisStore:
				err = s.Reset(ctx, "k_r")
			}
			if res := mustPeek(t, s, "k_r", p); err != nil || res.Daily.Remaining != 100 {
				t.Fatalf("after reset: %+v %v", res.Daily, err)
			}
		})
	}

	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	m := NewMemory(clock.Now)
	mustReserve(t, m, "k_old", p, 60)
	m.Take(ctx, "k_both", Policy{Daily: 5, Window: DayIn(nil)})
	mustReserve(t, m, "k_both", p, 60)
	clock.Advance(72 * time.Hour)
	mustReserve(t, m, "k_new", p, 10)
	if m.Len() != 3 {
		t.Fatalf("Len %d, want 3", m.Len())
	}
	if n := m.Sweep(clock.Now().Add(-sweepAfter)); n != 2 || m.Len() != 1 {
		t.Fatalf("swept %d, %d left; want 2 and 1", n, m.Len())
	}
	if res := mustPeek(t, m, "k_new", p); res.Daily.Remaining != 90 {
		t.Errorf("a recent key was swept: %+v", res.Daily)
	}
}

// TestTokensSurviveSaveAndLoad: token budgets come back from the counter
// file, with their windows, so that a reservation made before a restart
// settles after it.
func TestTokensSurviveSaveAndLoad(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 30, 0, time.UTC))
	m := NewMemory(clock.Now)
	p := TokenPolicy{Daily: 1000, PerMinute: 500, Model: "gpt", ModelDaily: 300, Window: DayIn(nil)}
	r := mustReserve(t, m, "k_a", p, 100).Reservation
	other := p
	other.Model = "claude"
	mustReserve(t, m, "k_a", other, 50)
	m.Take(ctx, "k_b", Policy{Daily: 5, Window: DayIn(nil)})
	mustReserve(t, m, "k_refused", p, 5000) // refused, never charged: nothing to save
	path := filepath.Join(t.TempDir(), "counters.json")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}

	restored := NewMemory(clock.Now)
	if n, err := restored.Load(path); err != nil || n != 2 {
		t.Fatalf("loaded %d keys, %v; want 2", n, err)
	}
	want, got := mustPeek(t, m, "k_a", p), mustPeek(t, restored, "k_a", p)
	if want != got || got.Daily.Remaining != 850 || got.Minute.Remaining != 350 || got.Model.Remaining != 200 {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	if res := mustPeek(t, restored, "k_a", other); res.Model.Remaining != 250 {
		t.Errorf("another model: %+v", res.Model)
	}
	// A reservation made before the restart is unknown after it (its
	// request ended with the process; a graceful stop saves after the
	// requests in flight settled): settling it does nothing.
	restored.Settle(ctx, "k_a", p, r, 40)
	if res := mustPeek(t, restored, "k_a", p); res != want {
		t.Errorf("a reservation of the process before was settled: %+v", res)
	}
	if restored.Count("k_b") != 1 {
		t.Error("request counts lost")
	}

	// A file written before token budgets loads as it did.
	old := filepath.Join(t.TempDir(), "old.json")
	os.WriteFile(old, []byte(`{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{"k_a":{"window_start":1795737600,"window_end":1795824000,"count":2,"last_seen":1795780800}}}`), 0o600)
	if n, err := NewMemory(clock.Now).Load(old); err != nil || n != 1 {
		t.Errorf("a file without tokens: %d, %v", n, err)
	}
}

func TestLoadRefusesCorruptTokens(t *testing.T) {
	const head = `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{},"tokens":{"k_a":`
	ok := `{"day_start":1795737600,"day_end":1795824000,"day_used":5,"minute_start":1795780800,"minute_used":5,"models":{"gpt":5},"last_seen":1795780800}`
	many := `{"day_start":1795737600,"day_end":1795824000,"day_used":5,"minute_start":1795780800,"models":{`
	for i := range maxTokenModels + 1 {
		if i > 0 {
			many += ","
		}
		many += fmt.Sprintf(`"m%d":1`, i)
	}
	many += `},"last_seen":1795780800}`
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	for name, entry := range map[string]string{
		"fine":                 ok,
		"negative day":         `{"day_start":1795737600,"day_end":1795824000,"day_used":-1,"minute_start":1795780800,"last_seen":1795780800}`,
		"negative minute":      `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":1795780800,"minute_used":-1,"last_seen":1795780800}`,
		"negative model":       `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":1795780800,"models":{"gpt":-1},"last_seen":1795780800}`,
		"day too long":         `{"day_start":1795737600,"day_end":1796824000,"day_used":1,"minute_start":1795780800,"last_seen":1795780800}`,
		"day ends first":       `{"day_start":1795737600,"day_end":1795737600,"day_used":1,"minute_start":1795780800,"last_seen":1795780800}`,
		"day far ahead":        `{"day_start":4102444800,"day_end":4102531200,"day_used":1,"minute_start":1795780800,"last_seen":1795780800}`,
		"minute off boundary":  `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":1795780801,"last_seen":1795780800}`,
		"minute far ahead":     `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":4102444800,"last_seen":1795780800}`,
		"no last seen":         `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":1795780800}`,
		"unknown field":        `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":1795780800,"last_seen":1795780800,"extra":1}`,
		"model count not int":  `{"day_start":1795737600,"day_end":1795824000,"day_used":1,"minute_start":1795780800,"models":{"gpt":"x"},"last_seen":1795780800}`,
		"too many models":      many,
		"tokens not an object": `[]`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "counters.json")
			os.WriteFile(path, []byte(head+entry+`}}`), 0o600)
			m := NewMemory(clock.Now)
			n, err := m.Load(path)
			if name == "fine" {
				if err != nil || n != 1 {
					t.Fatalf("a fine file: %d, %v", n, err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			if m.Len() != 0 {
				t.Fatal("part of a corrupt file was trusted")
			}
		})
	}
}

// TestRedisTokensFailureModes kills Redis under each on_failure mode: closed
// refuses, open lets through uncounted, local reserves and settles in
// memory from where Redis last stood; a Redis reservation's settlement
// fails and stays charged, and counting goes back to Redis once it answers.
func TestRedisTokensFailureModes(t *testing.T) {
	srv := redistest.Start(t)
	p := TokenPolicy{Daily: 1000, Window: DayIn(nil)}
	// Redis is stopped here, not slowed: a generous timeout, so that a
	// call that is merely slow on a loaded machine is not counted locally.
	closed := newRedisStore(t, srv.Addr(), "closed", nil, 2*time.Second)
	open := newRedisStore(t, srv.Addr(), "open", nil, 2*time.Second)
	local := newRedisStore(t, srv.Addr(), "local", nil, 2*time.Second)

	inRedis, err := local.Reserve(ctx, "k_f", p, 10)
	if err != nil || !inRedis.Allowed || inRedis.Reservation.Local || inRedis.Daily.Remaining != 990 {
		t.Fatalf("before: %+v %v", inRedis, err)
	}
	closedRes, _ := closed.Reserve(ctx, "k_f", p, 10)
	srv.Kill()

	for i := 1; i <= downAfter+2; i++ {
		if _, err := closed.Reserve(ctx, "k_f", p, 10); !errors.Is(err, ErrUnavailable) {
			t.Errorf("closed: %v, want ErrUnavailable", err)
		}
		if _, err := closed.PeekTokens(ctx, "k_f", p); !errors.Is(err, ErrUnavailable) {
			t.Errorf("closed peek: %v, want ErrUnavailable", err)
		}
		res, err := open.Reserve(ctx, "k_f", p, 10)
		if err != nil || !res.Allowed || !res.Uncounted || !res.Reservation.Uncounted {
			t.Errorf("open: %+v %v", res, err)
		}
		if err := open.Settle(ctx, "k_f", p, res.Reservation, 500); err != nil {
			t.Errorf("open: settling an uncounted reservation: %v", err)
		}
	}
	// A settlement Redis cannot take is queued, to be retried (beside the
	// cancellations of the reservations whose calls failed).
	queued := closed.shared.settles.Len()
	if err := closed.Settle(ctx, "k_f", p, closedRes.Reservation, 30); err != nil || closed.shared.settles.Len() != queued+1 {
		t.Errorf("closed: settling in a dead redis: %v, %d queued, want %d", err, closed.shared.settles.Len(), queued+1)
	}

	// Local counting goes on from where this instance last saw Redis (10
	// used), within its outage allowance: what was left then shared by two
	// instances (none leased requests yet), 10 + 990 / 2 = 505 tokens, of
	// which 15 are used after this reservation.
	res, err := local.Reserve(ctx, "k_f", p, 5)
	if err != nil || !res.Allowed || !res.Reservation.Local || res.Daily.Remaining != 490 || res.Daily.Limit != 1000 {
		t.Fatalf("local: %+v %v", res, err)
	}
	if err := local.Settle(ctx, "k_f", p, res.Reservation, 1); err != nil {
		t.Fatalf("local settle: %v", err)
	}
	if peek, _ := local.PeekTokens(ctx, "k_f", p); peek.Daily.Remaining != 989 {
		t.Errorf("local settle: %d left, want 989", peek.Daily.Remaining)
	}
	// A reservation Redis charged is settled there, later, not locally.
	if err := local.Settle(ctx, "k_f", p, inRedis.Reservation, 100); err != nil {
		t.Errorf("settling a redis reservation in a dead redis: %v", err)
	}
	if peek, _ := local.PeekTokens(ctx, "k_f", p); peek.Daily.Remaining != 989 {
		t.Errorf("a redis reservation was settled locally: %d left", peek.Daily.Remaining)
	}

	srv.Restart() // empty: the restarted server lost its counts
	for _, s := range []*RedisStore{closed, open, local} {
		waitUp(t, s)
		waitSettled(t, s)
	}
	// The token the local reservation used is charged to Redis once it
	// answers; the settlements of reservations the restarted Redis lost
	// do nothing.
	res, err = local.Reserve(ctx, "k_f", p, 10)
	if err != nil || res.Reservation.Local || res.Daily.Remaining != 989 {
		t.Fatalf("counting did not resume in redis: %+v %v", res, err)
	}
	if res, err := closed.Reserve(ctx, "k_f", p, 10); err != nil || res.Daily.Remaining != 979 {
		t.Errorf("the instances do not share the restarted redis: %+v %v", res.Daily, err)
	}
}

// BenchmarkReserveSettleMemory is one request's token bookkeeping in memory:
// a reservation with all three budgets and its settlement.
func BenchmarkReserveSettleMemory(b *testing.B) {
	m := NewMemory(nil)
	p := TokenPolicy{Daily: 1 << 50, PerMinute: 1 << 50, Model: "gpt-4o", ModelDaily: 1 << 50, Window: DayIn(nil)}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("k_", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			key := keys[i%len(keys)]
			i++
			res, _ := m.Reserve(ctx, key, p, 1000)
			m.Settle(ctx, key, p, res.Reservation, 700)
		}
	})
}

// BenchmarkReserveSettleRedis is the same against a local redis-server: two
// script calls, so two round trips.
func BenchmarkReserveSettleRedis(b *testing.B) {
	srv := redistest.Start(b)
	s := &RedisStore{KeyPrefix: "bench:", OnFailure: "closed", now: time.Now}
	s.Addresses = []string{srv.Addr()}
	sh, err := openRedis(s, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	s.shared = sh
	defer sh.Destruct()
	p := TokenPolicy{Daily: 1 << 50, PerMinute: 1 << 50, Model: "gpt-4o", ModelDaily: 1 << 50, Window: DayIn(nil)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		key := fmt.Sprint("k_", i%1024)
		res, err := s.Reserve(ctx, key, p, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Settle(ctx, key, p, res.Reservation, 700); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRedisReservationsByID: a reservation whose call failed is cancelled by
// its id (given back, in its own windows), and a cancellation that arrives
// before its reservation voids it; one never settled is given back by Redis
// once it expires, and a settlement that comes later adds the tokens used
// alone, once.
func TestRedisReservationsByID(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr(), "closed", nil, time.Second)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	awayFromMinuteEnd()
	p := TokenPolicy{Daily: 1000, PerMinute: 1000, Model: "gpt", ModelDaily: 1000, Window: DayIn(nil)}
	hash := TokensRedisKey("test:", "k_id")
	check := func(what, want string) {
		t.Helper()
		h, _ := c.HGetAll(ctx, hash).Result()
		if h["du"] != want || h["mu"] != want || h["m:gpt"] != want {
			t.Errorf("%s: %v, want du, mu, m:gpt %s", what, h, want)
		}
	}
	sh := s.shared

	r := mustReserve(t, s, "k_id", p, 100).Reservation
	check("reserved", "100")
	if err := sh.settle(ctx, pendingSettle{key: "k_id", field: sh.reservationField(r.ID), mode: 'c'}); err != nil {
		t.Fatal(err)
	}
	check("cancelled", "0")
	s.Settle(ctx, "k_id", p, r, 50) // cancelled: its request never ran
	check("settling a cancelled reservation", "0")

	// The cancellation first: the reservation that arrives after charges nothing.
	id := reservationIDs.Add(1)
	sh.settle(ctx, pendingSettle{key: "k_id", field: sh.reservationField(id), mode: 'c'})
	if _, _, err := sh.reserveTokens(ctx, "k_id", p, 100, time.Now(), false, id); err == nil {
		t.Error("a cancelled reservation was answered as made")
	}
	check("reservation after its cancellation", "0")

	// Expired: given back by the next call on the key; settled late, the
	// tokens used alone are added, once.
	r = mustReserve(t, s, "k_id", p, 100).Reservation
	c.ZAdd(ctx, hash+":e", redis.Z{Score: 0, Member: sh.reservationField(r.ID)})
	mustPeek(t, s, "k_id", p) // a peek reaps nothing
	mustReserve(t, s, "k_id", p, 10)
	check("expired reservation given back", "10")
	s.Settle(ctx, "k_id", p, r, 30)
	check("settled after it expired", "40")
	s.Settle(ctx, "k_id", p, r, 30)
	check("settled twice after it expired", "40")
	if n, _ := c.HLen(ctx, hash+":r").Result(); n != 1 {
		t.Errorf("%d reservations pending, want 1 (the last)", n)
	}
}
