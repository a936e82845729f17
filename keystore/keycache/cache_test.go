package keycache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// remote stands in for a key service in cache unit tests (the HTTP tests
// use a real server): it knows some digests, can fail, and counts calls.
type remote struct {
	mu      sync.Mutex
	known   map[keystore.Digest]*keystore.Key
	failing bool
	calls   atomic.Int64
	delay   time.Duration
	gate    chan struct{} // when set, each call waits for it to close
}

func (r *remote) fetch(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	r.calls.Add(1)
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		return keystore.Match{}, errors.New("service down")
	}
	if k := r.known[d]; k != nil {
		return keystore.Match{Key: k}, nil
	}
	return keystore.Match{}, nil
}

func (r *remote) set(fail bool) {
	r.mu.Lock()
	r.failing = fail
	r.mu.Unlock()
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestCache(t *testing.T, cfg CacheConfig) (*Cache, *remote, *clock, keystore.Digest) {
	t.Helper()
	key, _ := keystore.Generate(keystore.Dev)
	d := keystore.Sum(key)
	r := &remote{known: map[keystore.Digest]*keystore.Key{d: {ID: "k_known", Digest: d}}}
	c := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	cache, err := New(cfg, r.fetch, c.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	return cache, r, c, d
}

// waitCalls waits for background refreshes to reach the remote.
func waitCalls(t *testing.T, r *remote, want int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for r.calls.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := r.calls.Load(); got != want {
		t.Fatalf("%d calls to the source, want %d", got, want)
	}
}

func TestCacheHitMissAndNegative(t *testing.T) {
	cache, r, clk, d := newTestCache(t, CacheConfig{})
	ctx := context.Background()

	m, err := cache.Lookup(ctx, d)
	if err != nil || m.Key == nil || m.Key.ID != "k_known" {
		t.Fatalf("miss: %+v %v", m, err)
	}
	for i := 0; i < 10; i++ {
		if m, _ := cache.Lookup(ctx, d); m.Key == nil {
			t.Fatal("hit lost the key")
		}
	}
	if r.calls.Load() != 1 {
		t.Fatalf("fresh hits called the source: %d calls", r.calls.Load())
	}

	unknown := keystore.Sum("DEV_API_unknown")
	if m, err := cache.Lookup(ctx, unknown); m.Key != nil || err != nil {
		t.Fatalf("unknown: %+v %v", m, err)
	}
	cache.Lookup(ctx, unknown)
	if r.calls.Load() != 2 {
		t.Fatalf("the unknown key was not cached: %d calls", r.calls.Load())
	}
	clk.advance(DefaultCacheNegativeTTL)
	cache.Lookup(ctx, unknown)
	if r.calls.Load() != 3 {
		t.Fatalf("negative entry outlived negative_ttl: %d calls", r.calls.Load())
	}
}

func TestCacheStaleWhileRevalidate(t *testing.T) {
	cache, r, clk, d := newTestCache(t, CacheConfig{TTL: caddy.Duration(time.Minute), Stale: caddy.Duration(time.Hour)})
	ctx := context.Background()
	cache.Lookup(ctx, d)
	clk.advance(time.Minute)
	m, err := cache.Lookup(ctx, d)
	if err != nil || m.Key == nil {
		t.Fatalf("stale entry not served: %v", err)
	}
	waitCalls(t, r, 2) // one background refresh
	// The refreshed entry is fresh again: no more calls.
	for i := 0; i < 5; i++ {
		cache.Lookup(ctx, d)
	}
	time.Sleep(20 * time.Millisecond)
	if r.calls.Load() != 2 {
		t.Fatalf("%d calls after a refresh, want 2", r.calls.Load())
	}
}

func TestCacheWhileSourceFails(t *testing.T) {
	cache, r, clk, d := newTestCache(t, CacheConfig{TTL: caddy.Duration(time.Minute), Stale: caddy.Duration(time.Hour)})
	ctx := context.Background()
	cache.Lookup(ctx, d) // warm
	r.set(true)

	// Warm: the known key keeps working up to stale, refreshes failing behind.
	clk.advance(59 * time.Minute)
	if m, err := cache.Lookup(ctx, d); err != nil || m.Key == nil {
		t.Fatalf("warm key during an outage: %v", err)
	}
	// Cold: another key has nothing to fall back on.
	if _, err := cache.Lookup(ctx, keystore.Sum("DEV_API_cold")); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("cold key during an outage: %v, want ErrUnavailable", err)
	}
	// Past stale, the known key is unavailable too: never "unknown".
	clk.advance(time.Minute)
	if m, err := cache.Lookup(ctx, d); !errors.Is(err, keystore.ErrUnavailable) || m.Key != nil {
		t.Fatalf("past stale: %+v %v", m, err)
	}
	// The service comes back.
	r.set(false)
	if m, err := cache.Lookup(ctx, d); err != nil || m.Key == nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestCacheSingleflight(t *testing.T) {
	cache, r, _, d := newTestCache(t, CacheConfig{})
	// The source answers once all 100 lookups have missed the cache: a
	// miss is counted once the lookup has joined the one call in flight.
	r.gate = make(chan struct{})
	missesBefore := cacheMisses(t)
	misses := func() int64 { return int64(cacheMisses(t) - missesBefore) }
	var wg sync.WaitGroup
	var found atomic.Int64
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m, err := cache.Lookup(context.Background(), d); err == nil && m.Key != nil {
				found.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for misses() < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(r.gate)
	wg.Wait()
	if r.calls.Load() != 1 || found.Load() != 100 {
		t.Fatalf("%d calls, %d found (%d missed); want 1 and 100", r.calls.Load(), found.Load(), misses())
	}
}

// cacheMisses reads caddy_apikey_cache_requests_total{result="miss"}, as a
// config's registry would have it scraped.
func cacheMisses(t *testing.T) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(keystore.Collectors()...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "caddy_apikey_cache_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "miss" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal("no miss series in caddy_apikey_cache_requests_total")
	return 0
}

func TestCachePurge(t *testing.T) {
	cache, r, clk, d := newTestCache(t, CacheConfig{})
	ctx := context.Background()
	cache.Lookup(ctx, d)
	clk.advance(time.Second)
	cache.Purge("k_other")
	cache.Lookup(ctx, d)
	if r.calls.Load() != 1 {
		t.Fatal("purging another id dropped this one")
	}
	cache.Purge("k_known")
	clk.advance(time.Second)
	cache.Lookup(ctx, d)
	if r.calls.Load() != 2 {
		t.Fatal("purge of the id did not drop it")
	}
	clk.advance(time.Second)
	cache.PurgeAll()
	clk.advance(time.Second)
	cache.Lookup(ctx, d)
	if r.calls.Load() != 3 {
		t.Fatal("purge of everything did not drop it")
	}
}

// TestCacheBoundedUnderFlood: random well-formed keys fill only the unknown
// side, within max_keys, and the known keys stay.
func TestCacheBoundedUnderFlood(t *testing.T) {
	cache, r, _, d := newTestCache(t, CacheConfig{MaxKeys: 1000})
	ctx := context.Background()
	cache.Lookup(ctx, d)
	flood := make([]keystore.Digest, 20000)
	for i := range flood {
		k, _ := keystore.Generate(keystore.Dev)
		flood[i] = keystore.Sum(k)
		cache.Lookup(ctx, flood[i])
	}
	cache.unknown.Wait()
	held := 0
	for _, fd := range flood {
		if cache.get(fd) != nil {
			held++
		}
	}
	if held > 1000 || held == 0 {
		t.Fatalf("%d flood keys held, want at most max_keys (1000) and some", held)
	}
	calls := r.calls.Load()
	if m, _ := cache.Lookup(ctx, d); m.Key == nil || r.calls.Load() != calls {
		t.Fatal("the flood pushed out a known key")
	}
}

func TestCacheConfigChecks(t *testing.T) {
	for _, c := range []CacheConfig{
		{MaxKeys: -1},
		{TTL: caddy.Duration(time.Hour), Stale: caddy.Duration(time.Minute)},
		{NegativeTTL: caddy.Duration(-time.Second)},
	} {
		if _, err := c.WithDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestCacheBoundsCallsInFlight: many distinct cold keys against a slow
// source make at most maxConcurrentFetches calls at once; the rest fail
// fast as unavailable.
func TestCacheBoundsCallsInFlight(t *testing.T) {
	cache, r, _, _ := newTestCache(t, CacheConfig{})
	r.delay = 300 * time.Millisecond
	var wg sync.WaitGroup
	var unavailable atomic.Int64
	for i := 0; i < 3*maxConcurrentFetches; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _ := keystore.Generate(keystore.Dev)
			if _, err := cache.Lookup(context.Background(), keystore.Sum(k)); errors.Is(err, keystore.ErrUnavailable) {
				unavailable.Add(1)
			}
		}()
	}
	wg.Wait()
	if calls := r.calls.Load(); calls > maxConcurrentFetches {
		t.Errorf("%d calls in flight, bound is %d", calls, maxConcurrentFetches)
	}
	if unavailable.Load() < 2*maxConcurrentFetches {
		t.Errorf("%d lookups were refused, want the %d over the bound", unavailable.Load(), 2*maxConcurrentFetches)
	}
}

// TestCacheStaleRefreshBacksOff: while the source fails, a stale key does
// not make a call per request.
func TestCacheStaleRefreshBacksOff(t *testing.T) {
	cache, r, clk, d := newTestCache(t, CacheConfig{TTL: caddy.Duration(time.Minute), Stale: caddy.Duration(time.Hour)})
	cache.Lookup(context.Background(), d)
	r.set(true)
	clk.advance(2 * time.Minute)
	cache.Lookup(context.Background(), d)
	waitCalls(t, r, 2)
	for i := 0; i < 20; i++ {
		cache.Lookup(context.Background(), d)
	}
	time.Sleep(20 * time.Millisecond)
	if n := r.calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2: refreshes wait after a failure", n)
	}
	clk.advance(refreshBackoff)
	cache.Lookup(context.Background(), d)
	waitCalls(t, r, 3)
}
