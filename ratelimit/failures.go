package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// maxFailureEntries bounds the addresses tracked per shard, so a flood from
// many addresses cannot grow memory without end.
const maxFailureEntries = 4096

// Failures counts failed authentications per client address and blocks an
// address that reaches the limit for the rest of its window. IPv6 clients
// are counted per /64, since one host usually holds the whole /64.
type Failures struct {
	now     func() time.Time
	seed    maphash.Seed
	tracked atomic.Int64 // lets Blocked skip the lock when nothing failed
	shards  [shardCount]failureShard
}

type failureShard struct {
	mu      sync.Mutex
	entries map[netip.Prefix]*failureWindow
	ended   []BlockEnd // blocks that ended when a new window began, for Sweep
}

type failureWindow struct {
	start   int64 // Unix nanoseconds of the first failure in the window
	count   int64
	refused int64 // requests refused while the address was blocked
}

// BlockEnd reports an address whose block is over, and how many requests
// were refused while it lasted.
type BlockEnd struct {
	Prefix  netip.Prefix
	Refused int64
}

// NewFailures returns an empty tracker. now is the clock; nil means time.Now.
func NewFailures(now func() time.Time) *Failures {
	if now == nil {
		now = time.Now
	}
	f := &Failures{now: now, seed: maphash.MakeSeed()}
	for i := range f.shards {
		f.shards[i].entries = make(map[netip.Prefix]*failureWindow)
	}
	return f
}

// ClientPrefix is the unit clients are counted by: the address itself for
// IPv4, its /64 for IPv6 (one host usually holds the whole /64).
func ClientPrefix(addr netip.Addr) netip.Prefix { return failureKey(addr) }

func failureKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

func (f *Failures) shard(p netip.Prefix) *failureShard {
	a := p.Addr().As16()
	return &f.shards[maphash.Bytes(f.seed, a[:])%shardCount]
}

// Active reports whether any address has failed recently, so that callers
// can skip working out the address when none has.
func (f *Failures) Active() bool { return f.tracked.Load() > 0 }

// Blocked reports whether addr has reached limit in its current window, and
// how long until the window ends. A blocked request is counted, for the
// report when the block ends (see Sweep).
func (f *Failures) Blocked(addr netip.Addr, limit rate.Rate) (time.Duration, bool) {
	if f.tracked.Load() == 0 || !addr.IsValid() {
		return 0, false
	}
	return f.BlockedPrefix(failureKey(addr), limit)
}

// WidePrefix is addr's network of bits4 bits (IPv4) or bits6 bits (IPv6),
// for counting failures of a whole network (see BlockedPrefix and
// FailPrefix). An invalid addr gives an invalid prefix.
func WidePrefix(addr netip.Addr, bits4, bits6 int) netip.Prefix {
	addr = addr.Unmap()
	bits := bits4
	if addr.Is6() {
		bits = bits6
	}
	p, _ := addr.Prefix(bits)
	return p
}

// BlockedPrefix is Blocked for a prefix given whole (see WidePrefix).
func (f *Failures) BlockedPrefix(key netip.Prefix, limit rate.Rate) (time.Duration, bool) {
	if f.tracked.Load() == 0 || !key.IsValid() {
		return 0, false
	}
	now := f.now().UnixNano()
	sh := f.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	w := sh.entries[key]
	if w == nil {
		return 0, false
	}
	end := w.start + int64(limit.Period)
	if now >= end || w.count < limit.Limit {
		return 0, false
	}
	w.refused++
	return time.Duration(end - now), true
}

// Fail counts one failed authentication from addr. It reports whether this
// failure is the one that blocks the address, so that a block costs one log
// line, not one per refused request.
func (f *Failures) Fail(addr netip.Addr, limit rate.Rate) (blocksNow bool) {
	if !addr.IsValid() {
		return false
	}
	return f.FailPrefix(failureKey(addr), limit)
}

// FailPrefix is Fail for a prefix given whole (see WidePrefix).
func (f *Failures) FailPrefix(key netip.Prefix, limit rate.Rate) (blocksNow bool) {
	if !key.IsValid() {
		return false
	}
	now := f.now().UnixNano()
	sh := f.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	w := sh.entries[key]
	if w != nil && now >= w.start+int64(limit.Period) {
		// A new window; a block that ended here is reported by the next sweep.
		if w.refused > 0 && len(sh.ended) < maxFailureEntries {
			sh.ended = append(sh.ended, BlockEnd{Prefix: key, Refused: w.refused})
		}
		w.start, w.count, w.refused = now, 0, 0
	}
	if w == nil {
		if len(sh.entries) >= maxFailureEntries {
			f.sweepLocked(sh, now, limit.Period)
			if len(sh.entries) >= maxFailureEntries {
				return false // full of live windows: this address goes uncounted
			}
		}
		w = &failureWindow{start: now}
		sh.entries[key] = w
		f.tracked.Add(1)
	}
	w.count++
	return w.count == limit.Limit
}

// Sweep forgets windows that ended (period is the limit's) and reports the
// blocks among them; call it now and then (the handler does, every second).
func (f *Failures) Sweep(period time.Duration) []BlockEnd {
	now := f.now().UnixNano()
	var ended []BlockEnd
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		ended = append(ended, sh.ended...)
		sh.ended = sh.ended[:0]
		for k, w := range sh.entries {
			if now >= w.start+int64(period) {
				if w.refused > 0 {
					ended = append(ended, BlockEnd{Prefix: k, Refused: w.refused})
				}
				delete(sh.entries, k)
				f.tracked.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	return ended
}

func (f *Failures) sweepLocked(sh *failureShard, now int64, period time.Duration) {
	for k, w := range sh.entries {
		if now >= w.start+int64(period) {
			if w.refused > 0 && len(sh.ended) < maxFailureEntries {
				sh.ended = append(sh.ended, BlockEnd{Prefix: k, Refused: w.refused})
			}
			delete(sh.entries, k)
			f.tracked.Add(-1)
		}
	}
}
