package keycache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"

	"github.com/caddyserver/caddy/v2"
	"github.com/dgraph-io/ristretto/v2"
	"golang.org/x/sync/singleflight"
)

// CacheConfig bounds and times the cache in front of a remote key source.
type CacheConfig struct {
	// MaxKeys bounds the known keys held, and separately the unknown ones.
	// Default: 100000.
	MaxKeys int64 `json:"max_keys,omitempty"`
	// TTL is how long an answer is fresh and served with no I/O. Default: 1m.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// NegativeTTL is how long "unknown key" is remembered. Default: 10s.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`
	// Stale is how long after its last successful fetch a known key may
	// still be served while the source fails. Default: 1h. At least TTL.
	Stale caddy.Duration `json:"stale,omitempty"`
}

// Cache defaults.
const (
	DefaultCacheMaxKeys     = 100000
	DefaultCacheTTL         = time.Minute
	DefaultCacheNegativeTTL = 10 * time.Second
	DefaultCacheStale       = time.Hour
)

// WithDefaults fills unset fields and checks the rest.
func (c CacheConfig) WithDefaults() (CacheConfig, error) {
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultCacheMaxKeys
	}
	if c.TTL == 0 {
		c.TTL = caddy.Duration(DefaultCacheTTL)
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = caddy.Duration(DefaultCacheNegativeTTL)
	}
	if c.Stale == 0 {
		c.Stale = caddy.Duration(DefaultCacheStale)
	}
	switch {
	case c.MaxKeys < 0:
		return c, errors.New("cache: max_keys must be positive")
	case c.TTL < 0 || c.NegativeTTL < 0 || c.Stale < 0:
		return c, errors.New("cache: durations must be positive")
	case c.Stale < c.TTL:
		return c, fmt.Errorf("cache: stale (%v) must be at least ttl (%v)", time.Duration(c.Stale), time.Duration(c.TTL))
	}
	return c, nil
}

// fetchFunc asks the remote source about one digest. A zero Match and a nil
// error mean the source does not know the key.
type fetchFunc func(ctx context.Context, d keystore.Digest) (keystore.Match, error)

// maxConcurrentFetches bounds the calls a cache makes to its source at once:
// past it a miss fails at once (503) rather than opening yet another
// connection, so a flood of made-up keys cannot pile up calls.
const maxConcurrentFetches = 64

// maxClientFetches bounds the distinct keys one client (an address, or an
// IPv6 /64) may have waiting on the source at once, so one client cannot
// take every slot of maxConcurrentFetches from the others.
const maxClientFetches = 8

// clientFlights counts, per client, the distinct digests it waits on. Only
// misses touch it, and a client's entry goes when its last call ends, so it
// holds no more than the requests in flight.
type clientFlights struct {
	mu sync.Mutex
	m  map[netip.Prefix]map[keystore.Digest]int
}

func (f *clientFlights) enter(client netip.Prefix, d keystore.Digest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[netip.Prefix]map[keystore.Digest]int{}
	}
	waits := f.m[client]
	if waits[d] == 0 && len(waits) >= maxClientFetches {
		return false
	}
	if waits == nil {
		waits = map[keystore.Digest]int{}
		f.m[client] = waits
	}
	waits[d]++
	return true
}

func (f *clientFlights) leave(client netip.Prefix, d keystore.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	waits := f.m[client]
	if waits[d]--; waits[d] <= 0 {
		delete(waits, d)
	}
	if len(waits) == 0 {
		delete(f.m, client)
	}
}

// refreshBackoff is how long a known key waits before asking again after a
// background refresh failed.
const refreshBackoff = time.Second

// Cache answers lookups from memory and asks the remote source only on a
// miss (one call per digest however many requests wait for it) or, in the
// background, when an answer has gone past its TTL. Known and unknown keys
// are held in two ristretto caches, each bounded by MaxKeys, so a flood of
// made-up keys can only push out other made-up keys.
type Cache struct {
	cfg   CacheConfig
	fetch fetchFunc
	now   func() time.Time
	epoch time.Time // ages are measured from here, on the monotonic clock

	known, unknown *ristretto.Cache[uint64, *cacheEntry]
	calls          singleflight.Group
	slots          chan struct{} // one per fetch in flight
	flights        clientFlights

	// Purges mark entries fetched before them as gone. A purge of one id
	// costs O(1), so that a bulk change (thousands of ids published at once)
	// costs each instance little; lookups read without a lock.
	purgedAll     atomic.Int64 // clock reading, as fetched
	purgedUnknown atomic.Int64 // the same, for unknown-key answers only
	purgedIDs     sync.Map     // key id → clock reading of its last purge
	purges        atomic.Int64 // since the last sweep of purgedIDs

	// ids are the key ids the source has named, for management; real keys
	// only (unknown digests are never here), so it stays small.
	ids sync.Map

	// closing guards the ristretto caches: stores take it shared, Close
	// takes it whole, so nothing touches a closed cache.
	closing    sync.RWMutex
	closed     bool
	background context.Context
	cancel     context.CancelFunc
	onError    func(error)
}

type cacheEntry struct {
	digest  keystore.Digest
	match   keystore.Match // zero for an unknown key
	fetched int64          // clock reading of the fetch that produced it
	// refreshAfter holds background refreshes off after one failed.
	refreshAfter atomic.Int64
}

// New returns a cache in front of fetch. now is the clock (nil: time.Now);
// onError hears every failed fetch.
func New(cfg CacheConfig, fetch fetchFunc, now func() time.Time, onError func(error)) (*Cache, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	if onError == nil {
		onError = func(error) {}
	}
	newStore := func() (*ristretto.Cache[uint64, *cacheEntry], error) {
		return ristretto.NewCache(&ristretto.Config[uint64, *cacheEntry]{
			NumCounters: min(10*cfg.MaxKeys, 10_000_000),
			MaxCost:     cfg.MaxKeys,
			BufferItems: 64,
			// The key is already 64 bits of SHA-256; entries carry the whole
			// digest, compared on every hit.
			KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
			IgnoreInternalCost: true,
		})
	}
	c := &Cache{cfg: cfg, fetch: fetch, now: now, epoch: now(), onError: onError,
		slots: make(chan struct{}, maxConcurrentFetches)}
	if c.known, err = newStore(); err != nil {
		return nil, err
	}
	if c.unknown, err = newStore(); err != nil {
		c.known.Close()
		return nil, err
	}
	c.purgedAll.Store(math.MinInt64) // nothing purged yet
	c.purgedUnknown.Store(math.MinInt64)
	c.background, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// clock reads the time since the cache began, on the monotonic clock, so a
// wall clock that steps back cannot make old answers look fresh.
func (c *Cache) clock() int64 { return int64(c.now().Sub(c.epoch)) }

func cacheKey(d keystore.Digest) uint64 {
	return uint64(d[0]) | uint64(d[1])<<8 | uint64(d[2])<<16 | uint64(d[3])<<24 |
		uint64(d[4])<<32 | uint64(d[5])<<40 | uint64(d[6])<<48 | uint64(d[7])<<56
}

// get returns the entry for d, or nil when there is none or it was purged.
func (c *Cache) get(d keystore.Digest) *cacheEntry {
	k := cacheKey(d)
	e, ok := c.known.Get(k)
	if !ok {
		if e, ok = c.unknown.Get(k); !ok {
			return nil
		}
	}
	if !e.digest.Equal(d) || e.fetched <= c.purgedAll.Load() {
		return nil
	}
	if e.match.Key == nil && e.fetched <= c.purgedUnknown.Load() {
		return nil
	}
	if e.match.Key != nil {
		if at, ok := c.purgedIDs.Load(e.match.Key.ID); ok && e.fetched <= at.(int64) {
			return nil
		}
	}
	return e
}

// Lookup answers from the cache when it can. A failing source shows as an
// error wrapping ErrUnavailable, never as an unknown key.
func (c *Cache) Lookup(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	if m, ok := c.cached(d); ok {
		return m, nil
	}
	return c.miss(ctx, d)
}

// LookupFor is Lookup on behalf of a client, which may wait on at most
// maxClientFetches distinct calls at once; past that it gets ErrClientBusy
// without a call. Requests for a digest the client already waits on join
// that call and take no new place.
func (c *Cache) LookupFor(ctx context.Context, d keystore.Digest, client netip.Prefix) (keystore.Match, error) {
	if m, ok := c.cached(d); ok {
		return m, nil
	}
	if !c.flights.enter(client, d) {
		return keystore.Match{}, keystore.ErrClientBusy
	}
	defer c.flights.leave(client, d)
	return c.miss(ctx, d)
}

// cached answers from the cache, if it holds a usable answer.
func (c *Cache) cached(d keystore.Digest) (keystore.Match, bool) {
	if e := c.get(d); e != nil {
		now := c.clock()
		age := time.Duration(now - e.fetched)
		switch {
		case e.match.Key == nil && age < time.Duration(c.cfg.NegativeTTL):
			keystore.ObserveCache("negative_hit")
			return keystore.Match{}, true
		case e.match.Key != nil && age < time.Duration(c.cfg.TTL):
			keystore.ObserveCache("hit")
			return e.match, true
		case e.match.Key != nil && age < time.Duration(c.cfg.Stale):
			// Stale while revalidate: answer now, refresh once behind.
			keystore.ObserveCache("stale")
			if now >= e.refreshAfter.Load() {
				c.refresh(d, e)
			}
			return e.match, true
		}
	}
	return keystore.Match{}, false
}

// miss asks the source, joining a call for d that is already in flight.
// The miss is counted once joined, so a count of n misses means n lookups
// wait on calls (TestCacheSingleflight holds the call until then).
func (c *Cache) miss(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	ch := c.calls.DoChan(string(d[:]), func() (any, error) { return c.fetchAndStore(d) })
	keystore.ObserveCache("miss")
	select {
	case res := <-ch:
		if res.Err != nil {
			// A known key whose entry is past stale has nothing left to give.
			return keystore.Match{}, res.Err
		}
		return res.Val.(keystore.Match), nil
	case <-ctx.Done():
		return keystore.Match{}, fmt.Errorf("%w: %v", keystore.ErrUnavailable, ctx.Err())
	}
}

// refresh starts one background fetch for d unless one is running; after a
// failure the entry waits refreshBackoff before the next try.
func (c *Cache) refresh(d keystore.Digest, e *cacheEntry) {
	c.calls.DoChan(string(d[:]), func() (any, error) {
		m, err := c.fetchAndStore(d)
		if err != nil {
			e.refreshAfter.Store(c.clock() + int64(refreshBackoff))
		}
		return m, err
	})
}

var errTooManyFetches = fmt.Errorf("%w: too many calls to the key source in flight", keystore.ErrUnavailable)

// fetchAndStore asks the source and remembers the answer. On failure the
// old entry is left alone, so a known key keeps working until it is stale.
func (c *Cache) fetchAndStore(d keystore.Digest) (keystore.Match, error) {
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	default:
		return keystore.Match{}, errTooManyFetches
	}
	started := c.clock()
	m, err := c.fetch(c.background, d)
	if err != nil {
		err = fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
		c.onError(err)
		return keystore.Match{}, err
	}
	c.closing.RLock()
	defer c.closing.RUnlock()
	if c.closed {
		return m, nil
	}
	e := &cacheEntry{digest: d, match: m, fetched: started}
	k := cacheKey(d)
	if m.Key != nil {
		c.ids.Store(m.Key.ID, struct{}{})
		c.unknown.Del(k)
		c.known.Set(k, e, 1)
		c.known.Wait()
	} else {
		c.known.Del(k)
		c.unknown.Set(k, e, 1)
		c.unknown.Wait()
	}
	return m, nil
}

// Purge drops every cached answer about the key id: the next request asks
// the source again.
func (c *Cache) Purge(id string) {
	now := c.clock()
	c.purgedIDs.Store(id, now)
	// Now and then, forget purges older than stale: every entry fetched
	// before them is gone anyway.
	if c.purges.Add(1)%purgeSweepEvery == 0 {
		c.purgedIDs.Range(func(k, at any) bool {
			if time.Duration(now-at.(int64)) >= time.Duration(c.cfg.Stale) {
				c.purgedIDs.Delete(k)
			}
			return true
		})
	}
}

// purgeSweepEvery is how many purges pass between sweeps of old ones.
const purgeSweepEvery = 4096

// Knows reports whether the source has named this key id.
func (c *Cache) Knows(id string) bool {
	_, ok := c.ids.Load(id)
	return ok
}

// PurgeUnknown drops every cached "unknown key" answer, e.g. when keys
// were added: a key created a moment ago must not wait out negative_ttl.
func (c *Cache) PurgeUnknown() {
	c.purgedUnknown.Store(c.clock())
}

// PurgeAll drops every cached answer.
func (c *Cache) PurgeAll() {
	c.purgedAll.Store(c.clock())
}

// Close stops background refreshes and frees the caches.
func (c *Cache) Close() {
	c.cancel()
	c.closing.Lock()
	defer c.closing.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.known.Close()
	c.unknown.Close()
}
