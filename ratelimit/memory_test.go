package ratelimit

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

var ctx = context.Background()

func TestDailyQuotaAndReset(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 22, 0, 0, 0, time.UTC))
	m := NewMemory(clock.Now)
	p := Policy{Daily: 3, Window: DayIn(nil)}
	for i := 1; i <= 3; i++ {
		res, _ := m.Take(ctx, "k", p)
		if !res.Allowed || res.Daily.Remaining != int64(3-i) {
			t.Fatalf("request %d: %+v", i, res)
		}
	}
	res, _ := m.Take(ctx, "k", p)
	if res.Allowed || res.DeniedBy != DailyLimit {
		t.Fatalf("request 4 allowed: %+v", res)
	}
	if res.RetryAfter != 2*time.Hour || !res.Daily.Reset.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("retry after %v, reset %v", res.RetryAfter, res.Daily.Reset)
	}
	if res.Daily.Window != 24*time.Hour || res.Daily.Remaining != 0 {
		t.Errorf("usage %+v", res.Daily)
	}
	if m.Count("k") != 3 {
		t.Errorf("refused request was counted: %d", m.Count("k"))
	}
	// Other keys have their own budget.
	if res, _ := m.Take(ctx, "other", p); !res.Allowed {
		t.Error("another key was refused")
	}
	// One nanosecond before midnight: still refused; at midnight: a new day.
	clock.Set(time.Date(2026, 11, 27, 23, 59, 59, 999999999, time.UTC))
	if res, _ := m.Take(ctx, "k", p); res.Allowed {
		t.Error("allowed before the reset")
	}
	clock.Set(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	if res, _ := m.Take(ctx, "k", p); !res.Allowed || res.Daily.Remaining != 2 {
		t.Errorf("after the reset: %+v", res)
	}
}

func TestDailyQuotaInZoneAcrossDST(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	// 2026-11-01 is a 25-hour day in New York.
	clock := newClock(time.Date(2026, 11, 1, 0, 30, 0, 0, ny))
	m := NewMemory(clock.Now)
	p := Policy{Daily: 1, Window: DayIn(ny)}
	if res, _ := m.Take(ctx, "k", p); !res.Allowed || res.Daily.Window != 25*time.Hour {
		t.Fatalf("first: %+v", res)
	}
	// 24 hours later it is still Nov 1 (23:30 local): still refused.
	clock.Advance(24 * time.Hour)
	res, _ := m.Take(ctx, "k", p)
	if res.Allowed {
		t.Fatal("a 25-hour day reset after 24 hours")
	}
	if res.RetryAfter != 30*time.Minute {
		t.Errorf("retry after %v, want 30m", res.RetryAfter)
	}
	clock.Advance(30 * time.Minute)
	if res, _ := m.Take(ctx, "k", p); !res.Allowed {
		t.Error("not reset at local midnight")
	}
}

func TestGCRABurstAndSteadyRate(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	m := NewMemory(clock.Now)
	p := Policy{Daily: 1000, Window: DayIn(nil), Burst: rate.Rate{Limit: 10, Period: time.Second}}

	// A burst of 10 at one instant passes, the 11th does not.
	for i := 0; i < 10; i++ {
		res, _ := m.Take(ctx, "k", p)
		if !res.Allowed {
			t.Fatalf("burst request %d refused", i+1)
		}
		if res.Burst.Remaining != int64(9-i) {
			t.Errorf("burst request %d: remaining %d", i+1, res.Burst.Remaining)
		}
	}
	res, _ := m.Take(ctx, "k", p)
	if res.Allowed || res.DeniedBy != BurstLimit {
		t.Fatalf("11th: %+v", res)
	}
	if res.RetryAfter != 100*time.Millisecond {
		t.Errorf("retry after %v, want 100ms", res.RetryAfter)
	}
	if res.Burst.Reset.Sub(clock.Now()) != time.Second {
		t.Errorf("burst reset in %v", res.Burst.Reset.Sub(clock.Now()))
	}
	if m.Count("k") != 10 {
		t.Errorf("the refused request spent daily quota")
	}

	// Steady: one request every 100ms keeps passing forever.
	for i := 0; i < 50; i++ {
		clock.Advance(100 * time.Millisecond)
		if res, _ := m.Take(ctx, "k", p); !res.Allowed {
			t.Fatalf("steady request %d refused", i)
		}
	}
	// Faster than the rate: only every other request passes.
	passed := 0
	for i := 0; i < 40; i++ {
		clock.Advance(50 * time.Millisecond)
		if res, _ := m.Take(ctx, "k", p); res.Allowed {
			passed++
		}
	}
	if passed != 20 {
		t.Errorf("at twice the rate, %d of 40 passed, want 20", passed)
	}
	// After a quiet second the whole burst is back.
	clock.Advance(time.Second)
	for i := 0; i < 10; i++ {
		if res, _ := m.Take(ctx, "k", p); !res.Allowed {
			t.Fatalf("refill: request %d refused", i+1)
		}
	}
}

func TestBurstRefusalSpendsNoQuotaAndQuotaRefusalNoBurst(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	m := NewMemory(clock.Now)
	p := Policy{Daily: 2, Window: DayIn(nil), Burst: rate.Rate{Limit: 1, Period: time.Minute}}
	if res, _ := m.Take(ctx, "k", p); !res.Allowed {
		t.Fatal("first refused")
	}
	if res, _ := m.Take(ctx, "k", p); res.Allowed || res.DeniedBy != BurstLimit {
		t.Fatal("second not refused by burst")
	}
	clock.Advance(time.Minute)
	if res, _ := m.Take(ctx, "k", p); !res.Allowed {
		t.Fatal("the burst refusal spent the daily quota")
	}
	clock.Advance(time.Minute)
	res, _ := m.Take(ctx, "k", p)
	if res.Allowed || res.DeniedBy != DailyLimit {
		t.Fatalf("third: %+v", res)
	}
	// The quota refusal did not use the burst: after the day it passes at once.
	clock.Set(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	if res, _ := m.Take(ctx, "k", p); !res.Allowed {
		t.Fatal("refused after the reset")
	}
}

func TestZeroQuotaRefusesAll(t *testing.T) {
	m := NewMemory(nil)
	if res, _ := m.Take(ctx, "k", Policy{Daily: 0, Window: DayIn(nil)}); res.Allowed {
		t.Fatal("a zero quota allowed a request")
	}
}

// TestExactUnderConcurrency: N budget, many goroutines, exactly N pass.
func TestExactUnderConcurrency(t *testing.T) {
	m := NewMemory(nil)
	p := Policy{Daily: 1000, Window: DayIn(nil)}
	var passed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if res, _ := m.Take(ctx, "k", p); res.Allowed {
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if passed.Load() != 1000 {
		t.Fatalf("%d passed, want 1000", passed.Load())
	}
}

func TestSweepAndReset(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	m := NewMemory(clock.Now)
	p := Policy{Daily: 10, Window: DayIn(nil)}
	m.Take(ctx, "old", p)
	clock.Advance(47 * time.Hour)
	m.Take(ctx, "recent", p)
	if n := m.Sweep(clock.Now().Add(-48 * time.Hour)); n != 0 {
		t.Fatalf("swept %d keys seen within two windows", n)
	}
	clock.Advance(2 * time.Hour)
	if n := m.Sweep(clock.Now().Add(-48 * time.Hour)); n != 1 || m.Len() != 1 {
		t.Fatalf("swept %d, %d left", n, m.Len())
	}
	m.Reset("recent")
	if m.Len() != 0 {
		t.Fatal("reset kept the key")
	}
}

// BenchmarkMemoryTake measures one quota check with a burst rate.
func BenchmarkMemoryTake(b *testing.B) {
	m := NewMemory(nil)
	p := Policy{Daily: 1 << 62, Window: DayIn(nil), Burst: rate.Rate{Limit: 1000000, Period: time.Second}}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("k_%d", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Take(ctx, keys[i%len(keys)], p)
			i++
		}
	})
}

// BenchmarkMemoryBytesPerKey reports the heap a key's counters take, as
// stated in README.md.
func BenchmarkMemoryBytesPerKey(b *testing.B) {
	const n = 100000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k_%06d", i) // the strings belong to the key records, not to the store
	}
	p := Policy{Daily: 10, Window: DayIn(nil), Burst: rate.Rate{Limit: 10, Period: time.Second}}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := NewMemory(nil)
		for _, k := range keys {
			m.Take(ctx, k, p)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/key")
		runtime.KeepAlive(m)
	}
}

// TestRoutesInOtherZonesShareOneWindow: a key that alternates between a UTC
// route and a Berlin route gets one budget per window, not one per zone.
func TestRoutesInOtherZonesShareOneWindow(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	clock := newClock(time.Date(2026, 11, 27, 23, 30, 0, 0, time.UTC)) // 00:30 on the 28th in Berlin
	m := NewMemory(clock.Now)
	utcRoute := Policy{Daily: 2, Window: DayIn(nil)}
	berlinRoute := Policy{Daily: 2, Window: DayIn(berlin)}
	if res, _ := m.Take(ctx, "k", utcRoute); !res.Allowed {
		t.Fatal("first refused")
	}
	if res, _ := m.Take(ctx, "k", berlinRoute); !res.Allowed {
		t.Fatal("second refused")
	}
	res, _ := m.Take(ctx, "k", berlinRoute)
	if res.Allowed {
		t.Fatal("the Berlin route gave a second budget")
	}
	// The reset reported is the window's own end: midnight UTC.
	if !res.Daily.Reset.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("reset %v", res.Daily.Reset)
	}
	clock.Set(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC))
	if res, _ := m.Take(ctx, "k", berlinRoute); !res.Allowed {
		t.Error("not reset when the window ended")
	}
}

func TestPeekSpendsNothing(t *testing.T) {
	m := NewMemory(nil)
	p := Policy{Daily: 5, Window: DayIn(nil), Burst: rate.Rate{Limit: 2, Period: time.Second}}
	m.Take(ctx, "k", p)
	for i := 0; i < 10; i++ {
		res, _ := m.Peek(ctx, "k", p)
		if res.Daily.Remaining != 4 || res.Burst.Remaining != 1 {
			t.Fatalf("peek: %+v", res)
		}
	}
	if res, _ := m.Peek(ctx, "never", p); res.Daily.Remaining != 5 || res.Daily.Reset.IsZero() {
		t.Errorf("peek at an unseen key: %+v", res.Daily)
	}
}
