package ratelimit

import (
	"net/netip"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

func TestFailuresBlockForTheRestOfTheWindow(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	f := NewFailures(clock.Now)
	limit := rate.Rate{Limit: 3, Period: time.Minute}
	ip := netip.MustParseAddr("198.51.100.7")
	other := netip.MustParseAddr("198.51.100.8")

	if _, blocked := f.Blocked(ip, limit); blocked {
		t.Fatal("blocked before any failure")
	}
	for i := 0; i < 3; i++ {
		if _, blocked := f.Blocked(ip, limit); blocked {
			t.Fatalf("blocked after %d failures", i)
		}
		clock.Advance(10 * time.Second)
		f.Fail(ip, limit)
	}
	wait, blocked := f.Blocked(ip, limit)
	if !blocked || wait != 40*time.Second {
		t.Fatalf("after 3 failures: blocked=%v wait=%v, want 40s (the window began at the first failure)", blocked, wait)
	}
	if _, blocked := f.Blocked(other, limit); blocked {
		t.Error("another address is blocked")
	}
	clock.Advance(40 * time.Second)
	if _, blocked := f.Blocked(ip, limit); blocked {
		t.Error("still blocked after the window")
	}
	// A new window starts from zero.
	f.Fail(ip, limit)
	if _, blocked := f.Blocked(ip, limit); blocked {
		t.Error("one failure in a new window blocks")
	}
}

func TestFailuresGroupIPv6By64(t *testing.T) {
	f := NewFailures(nil)
	limit := rate.Rate{Limit: 2, Period: time.Minute}
	f.Fail(netip.MustParseAddr("2001:db8:1:2::1"), limit)
	f.Fail(netip.MustParseAddr("2001:db8:1:2::ffff"), limit)
	if _, blocked := f.Blocked(netip.MustParseAddr("2001:db8:1:2:abcd::9"), limit); !blocked {
		t.Error("addresses in one /64 are counted apart")
	}
	if _, blocked := f.Blocked(netip.MustParseAddr("2001:db8:1:3::1"), limit); blocked {
		t.Error("another /64 is blocked")
	}
	// IPv4-mapped addresses count as IPv4.
	f.Fail(netip.MustParseAddr("::ffff:192.0.2.1"), limit)
	f.Fail(netip.MustParseAddr("192.0.2.1"), limit)
	if _, blocked := f.Blocked(netip.MustParseAddr("192.0.2.1"), limit); !blocked {
		t.Error("mapped and plain IPv4 counted apart")
	}
}

func TestFailuresStayBounded(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	f := NewFailures(clock.Now)
	limit := rate.Rate{Limit: 5, Period: time.Minute}
	addr := netip.MustParseAddr("10.0.0.0")
	total := shardCount*maxFailureEntries + 5000
	for i := 0; i < total; i++ {
		f.Fail(addr, limit)
		addr = addr.Next()
	}
	if n := f.tracked.Load(); n > shardCount*maxFailureEntries {
		t.Fatalf("tracking %d addresses, bound is %d", n, shardCount*maxFailureEntries)
	}
	// Once the windows have passed, new addresses are tracked again.
	clock.Advance(time.Minute)
	fresh := netip.MustParseAddr("203.0.113.1")
	for i := 0; i < 5; i++ {
		f.Fail(fresh, limit)
	}
	if _, blocked := f.Blocked(fresh, limit); !blocked {
		t.Error("a new address is not tracked after old windows expired")
	}
}

func TestFailuresReportBlocksOnce(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	f := NewFailures(clock.Now)
	limit := rate.Rate{Limit: 3, Period: time.Minute}
	ip := netip.MustParseAddr("198.51.100.9")
	var blocks int
	for range 3 {
		if f.Fail(ip, limit) {
			blocks++
		}
	}
	if blocks != 1 {
		t.Fatalf("%d failures reported as the one that blocks, want 1", blocks)
	}
	for range 7 {
		if _, blocked := f.Blocked(ip, limit); !blocked {
			t.Fatal("not blocked")
		}
	}
	if ended := f.Sweep(limit.Period); len(ended) != 0 {
		t.Fatalf("a live block was reported as ended: %+v", ended)
	}
	clock.Advance(time.Minute)
	ended := f.Sweep(limit.Period)
	if len(ended) != 1 || ended[0].Refused != 7 || ended[0].Prefix != netip.MustParsePrefix("198.51.100.9/32") {
		t.Fatalf("ended: %+v, want one block that refused 7", ended)
	}
	if ended := f.Sweep(limit.Period); len(ended) != 0 {
		t.Errorf("reported twice: %+v", ended)
	}
	// A block that ends because the address fails again is reported too.
	for range 3 {
		f.Fail(ip, limit)
	}
	f.Blocked(ip, limit)
	clock.Advance(time.Minute)
	f.Fail(ip, limit)
	if ended := f.Sweep(limit.Period); len(ended) != 1 || ended[0].Refused != 1 {
		t.Errorf("ended on a new window: %+v", ended)
	}
}
