package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Leases: a RedisStore counts a key's daily requests (for a policy without
// a burst rate) by taking a lease of several units of the key's window from
// Redis in one call and spending them in memory. Redis counts the units of
// a lease as spent the moment it grants them, so the sum of all leases and
// of all requests counted never passes the limit: the cluster cannot admit
// more than the limit, whatever happens to Redis or to an instance.
//
// A grant is min(want, floor(remaining / spenders)), at least 1 while
// anything remains: spenders is the instances that took a lease on the key
// in the last spenderStale (this one included), so the remaining budget is
// shared out, and the last units go one at a time. want starts at 1,
// doubles each time a lease is used up within leaseFast of its grant, is
// halved when a lease goes idle, and is never more than leaseCap(limit).
//
// Unused units go back to Redis when the lease is idle for leaseIdle (the
// sweeper), at shutdown (Destruct), and when the key's limit changes; a
// window that ends takes its units with it. Units held by an instance that
// dies without returning them stay counted until the window ends: at most
// leaseCap(limit) per instance.
//
// Redis fields, in the key's hash (RedisKey, one hash slot): ws, we and n as
// for takeScript (n counts leased units), and i:<instance> = the time of the
// instance's last grant (Unix ms), removed when it returns its units or by
// the next grant once older than spenderStale.

// Lease settings; see docs/choices.md.
const (
	leaseCapMax      = 1000             // no lease is larger, whatever the limit
	leaseCapFraction = 100              // nor larger than 1 % of the limit
	leaseFast        = 2 * time.Second  // a lease used up this fast doubles the next
	leaseIdle        = 2 * time.Second  // a lease unused this long goes back
	leaseSweepEvery  = time.Second      // how often the sweeper looks
	leaseForget      = time.Minute      // an entry holding nothing, unused this long, is dropped
	spenderStale     = 10 * time.Second // an instance with no grant this long no longer shares the budget
)

// leaseCap is the largest lease of a key whose window allows limit requests.
func leaseCap(limit int64) int64 { return max(1, min(leaseCapMax, limit/leaseCapFraction)) }

// lease is one key's units held by this instance, and what the instance
// last learned of the key from Redis.
type lease struct {
	daily    int64  // the limit the units were granted under
	window   Window // and the policy's window, for charging what is owed
	ws, we   int64  // the window they belong to (Redis's, Unix s)
	left     int64  // units held, not spent
	n        int64  // Redis's count after the last grant, leased units included
	spenders int64  // instances spending the key at the last grant, this one included
	want     int64  // the size of the next grant
	granted  int64  // when the last grant arrived (this instance's clock, Unix ns)
	used     int64  // when a unit was last spent or granted (Unix ns)
	offset   int64  // Redis's clock less this instance's, at the last grant (ns)
	known    bool   // a grant was seen: ws, we, n, spenders hold

	// Counting while Redis fails (on_failure local), see outageSpend.
	owed, owedWs int64 // units spent while Redis failed, not yet charged to Redis, and their window
	outWs        int64 // the window outSpent and allowance belong to
	outSpent     int64
	allowance    int64

	// granting is closed when the grant in flight for the key ends (nil:
	// none in flight); grantFailed says whether the last grant failed.
	granting    chan struct{}
	grantFailed bool
}

type leaseShard struct {
	mu sync.Mutex
	m  map[string]*lease
}

// leaseTable is the leases of one Redis store, sharded like Memory.
type leaseTable struct {
	seed   maphash.Seed
	shards [shardCount]leaseShard
	// peers is the most spenders a grant reported for any key: the
	// divisor of the outage allowance of a key this instance knows nothing
	// of. 0 until a grant.
	peers atomic.Int64
}

func newLeaseTable() *leaseTable {
	t := &leaseTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*lease)
	}
	return t
}

func (t *leaseTable) shard(key string) *leaseShard {
	return &t.shards[maphash.String(t.seed, key)%shardCount]
}

// newInstanceID names this instance in Redis's spender fields.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// leaseResult reports a spend from l at now (this instance's clock).
func (l *lease) result(now int64, p Policy, allowed bool) Result {
	redisNow := time.Unix(0, now+l.offset)
	res := Result{Allowed: allowed, Now: redisNow, Daily: Usage{
		Limit:     p.Daily,
		Remaining: max(p.Daily-l.n+l.left, 0),
		Reset:     time.Unix(l.we, 0),
		Window:    time.Duration(l.we-l.ws) * time.Second,
	}}
	if !allowed {
		res.DeniedBy, res.RetryAfter = DailyLimit, max(time.Unix(l.we, 0).Sub(redisNow), 0)
	}
	return res
}

// current reports whether l's units may be spent under p at now: granted
// under the same limit, in a window that has not ended.
func (l *lease) current(now int64, p Policy) bool {
	return l.known && l.daily == p.Daily && (now+l.offset)/int64(time.Second) < l.we
}

// takeLeased spends a unit of key's lease, or takes a new lease from Redis,
// or counts as on_failure says when Redis fails. One grant per key is in
// flight at a time on an instance: the requests that find the lease empty
// meanwhile wait for that grant rather than send their own, so a stalled
// Redis costs at most one lost lease per key and instance, not one per
// waiting request; when that grant fails, they go on as on_failure says
// without another call.
func (s *RedisStore) takeLeased(ctx context.Context, key string, p Policy) (Result, error) {
	sh := s.shared
	ls := sh.leases.shard(key)
	for {
		nowT := s.now()
		now := nowT.UnixNano()
		ls.mu.Lock()
		l := ls.m[key]
		if l == nil {
			l = &lease{want: 1}
			ls.m[key] = l
		}
		if l.left > 0 && l.current(now, p) {
			l.left--
			l.used = now
			res := l.result(now, p, true)
			ls.mu.Unlock()
			return res, nil
		}
		if wait := l.granting; wait != nil {
			ls.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
			ls.mu.Lock()
			failed := l.grantFailed
			ls.mu.Unlock()
			if failed {
				return s.onFailure(key, p, nowT)
			}
			continue // the grant came: spend from it, or take the next
		}
		return s.grantAndSpend(ctx, key, p, ls, l, nowT)
	}
}

// grantAndSpend takes a new lease of key from Redis for l (the caller holds
// ls.mu, which it releases) and spends a unit of it.
func (s *RedisStore) grantAndSpend(ctx context.Context, key string, p Policy, ls *leaseShard, l *lease, nowT time.Time) (Result, error) {
	sh := s.shared
	now := nowT.UnixNano()
	// Units of another limit go back with this call; those of an ended
	// window are void.
	var ret, retWs int64
	if l.left > 0 {
		if l.known && (now+l.offset)/int64(time.Second) < l.we {
			ret, retWs = l.left, l.ws
		}
		l.left, l.want = 0, 1
	}
	if l.known && l.granted > 0 && now-l.granted < int64(leaseFast) && l.daily == p.Daily {
		l.want = min(l.want*2, leaseCap(p.Daily))
	}
	want := min(l.want, leaseCap(p.Daily))
	owed, owedWs := l.owed, l.owedWs
	l.owed = 0
	if sh.down.Load() {
		ls.mu.Unlock()
		s.keepOwed(key, owed, owedWs)
		return s.onFailure(key, p, nowT)
	}
	done := make(chan struct{})
	l.granting, l.grantFailed = done, false
	ls.mu.Unlock()

	g, err := sh.grant(ctx, key, p, nowT, want, ret, retWs, owed, owedWs)
	ls.mu.Lock()
	mine := l
	mine.granting, mine.grantFailed = nil, err != nil
	close(done)
	if err == nil {
		sh.failures.Store(0)
		if l = ls.m[key]; l == nil { // reset meanwhile
			l = &lease{want: 1}
			ls.m[key] = l
		}
		if !l.known || l.ws != g.ws {
			l.left = 0
		}
		l.daily, l.window, l.ws, l.we, l.n, l.spenders, l.known = p.Daily, p.Window, g.ws, g.we, g.n, g.spenders, true
		l.offset = g.now.UnixNano() - now
		l.left += g.units
		l.granted, l.used = now, now
		l.outWs, l.outSpent = 0, 0 // what was spent locally is in n now
		allowed := l.left > 0
		if allowed {
			l.left--
		}
		res := l.result(now, p, allowed)
		ls.mu.Unlock()
		if g.spenders > sh.leases.peers.Load() {
			sh.leases.peers.Store(g.spenders)
		}
		return res, nil
	}
	ls.mu.Unlock()
	// The call may have run: the units granted are lost (counted in
	// Redis, spent by nobody), the safe side; those returned may or
	// may not be back. What was owed is charged again later: counted
	// twice at worst, never lost.
	s.keepOwed(key, owed, owedWs)
	if ctx.Err() != nil {
		return Result{}, err // the client went away; Redis is not to blame
	}
	sh.failed(err)
	return s.onFailure(key, p, nowT)
}

// onFailure counts a request as on_failure says, once its lease is spent
// and Redis could not grant another.
func (s *RedisStore) onFailure(key string, p Policy, nowT time.Time) (Result, error) {
	switch s.OnFailure {
	case "open":
		return Result{Allowed: true, Uncounted: true, Now: time.Now()}, nil
	case "local":
		return s.outageSpend(key, p, nowT), nil
	}
	return Result{}, ErrUnavailable
}

// keepOwed puts units owed to Redis back on the key's entry after a call
// that failed to charge them.
func (s *RedisStore) keepOwed(key string, owed, owedWs int64) {
	if owed == 0 {
		return
	}
	ls := s.shared.leases.shard(key)
	ls.mu.Lock()
	if l := ls.m[key]; l != nil && (l.owed == 0 || l.owedWs == owedWs) {
		l.owed, l.owedWs = l.owed+owed, owedWs
	}
	ls.mu.Unlock()
}

// outageSpend counts a request in memory while Redis fails (on_failure
// local), within the key's outage allowance for the window: what the key
// had left at this instance's last grant divided by the instances that
// were spending it, floor((limit - n) / spenders); for a key this instance
// never leased in the window, floor(limit / peers), peers being the most
// spenders any grant reported, or 2 before any grant (an instance on Redis
// is assumed to have a peer). The units spent are charged to Redis with
// the next grant once it answers.
func (s *RedisStore) outageSpend(key string, p Policy, nowT time.Time) Result {
	sh := s.shared
	now := nowT.UnixNano()
	ls := sh.leases.shard(key)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.m[key]
	if l == nil {
		l = &lease{want: 1}
		ls.m[key] = l
	}
	ws, we := l.ws, l.we
	known := l.known && l.daily == p.Daily && (now+l.offset)/int64(time.Second) < l.we
	if !known {
		start, end := p.Window.Bounds(time.Unix(0, now+l.offset))
		ws, we = start.Unix(), end.Unix()
	}
	if l.outWs != ws {
		l.outWs, l.outSpent = ws, 0
		if known {
			l.allowance = max(p.Daily-l.n, 0) / max(l.spenders, 1)
		} else {
			peers := sh.leases.peers.Load()
			if peers == 0 {
				peers = 2
			}
			l.allowance = p.Daily / peers
		}
	}
	if !l.known {
		// For the sweeper and the charge.
		l.ws, l.we, l.daily, l.window = ws, we, p.Daily, p.Window
	}
	l.used = now
	allowed := l.outSpent < l.allowance
	if allowed {
		l.outSpent++
		if l.owedWs != ws {
			l.owed = 0 // owed to a window that ended: nothing to charge
		}
		l.owed, l.owedWs = l.owed+1, ws
	}
	redisNow := time.Unix(0, now+l.offset)
	res := Result{Allowed: allowed, Now: redisNow, Daily: Usage{
		Limit:     p.Daily,
		Remaining: l.allowance - l.outSpent,
		Reset:     time.Unix(we, 0),
		Window:    time.Duration(we-ws) * time.Second,
	}}
	if !allowed {
		res.DeniedBy, res.RetryAfter = DailyLimit, max(time.Unix(we, 0).Sub(redisNow), 0)
	}
	return res
}

// spendersOf is the divisor of a key's outage allowance: the instances
// spending it at this instance's last lease, else the most any grant
// reported, else 2.
func (s *RedisStore) spendersOf(key string) int64 {
	ls := s.shared.leases.shard(key)
	ls.mu.Lock()
	l := ls.m[key]
	known := l != nil && l.known
	var n int64
	if known {
		n = l.spenders
	}
	ls.mu.Unlock()
	if known {
		return max(n, 1)
	}
	if peers := s.shared.leases.peers.Load(); peers > 0 {
		return peers
	}
	return 2
}

// peekLeased answers a Peek from the key's lease, without a round trip,
// when it has a current one.
func (s *RedisStore) peekLeased(key string, p Policy) (Result, bool) {
	now := s.now().UnixNano()
	ls := s.shared.leases.shard(key)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.m[key]
	if l == nil || !l.current(now, p) {
		return Result{}, false
	}
	return l.result(now, p, true), true
}

// grantAnswer is what a lease call answered.
type grantAnswer struct {
	units, n, ws, we, spenders int64
	now                        time.Time
}

// leaseScript grants, returns and charges units of a key's daily window,
// atomically with the server's clock. ARGV: the limit, the units wanted (0
// to take none), this instance's field, units returned and their window
// start, units owed (spent while Redis failed) and their window start,
// spenderStale in ms, then candidate windows as for takeScript. Returned
// units come off n (never below 0) and owed ones are added, each only in
// the window they belong to. It answers the units granted, n, ws, we, the
// spenders (this instance included) and the server's time.
var leaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local daily = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local inst = ARGV[3]
local ret, retws = tonumber(ARGV[4]), tonumber(ARGV[5])
local owed, owedws = tonumber(ARGV[6]), tonumber(ARGV[7])
local stale = tonumber(ARGV[8])
local h = redis.call('HGETALL', KEYS[1])
local ws, we, n, tat = 0, 0, 0, 0
local spenders, dead = 0, {}
for i = 1, #h, 2 do
  local f, v = h[i], h[i + 1]
  if f == 'ws' then ws = tonumber(v)
  elseif f == 'we' then we = tonumber(v)
  elseif f == 'n' then n = tonumber(v)
  elseif f == 't' then tat = tonumber(v)
  elseif string.sub(f, 1, 2) == 'i:' and f ~= inst then
    if now_ms - tonumber(v) > stale then dead[#dead + 1] = f else spenders = spenders + 1 end
  end
end
if now_s >= we then
  if want == 0 and owed == 0 then
    return {0, 0, ws, we, 1, now_s, tonumber(t[2])}
  end
  local found = false
  for i = 9, #ARGV, 2 do
    local s, e = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    if now_s >= s and now_s < e then
      ws, we, n, found = s, e, 0, true
      break
    end
  end
  if not found then
    return redis.error_reply('ERR apikey: no daily window holds the server time; is this instance clock off by over a day?')
  end
end
if ret > 0 and retws == ws then n = math.max(n - ret, 0) end
if owed > 0 and owedws == ws then n = n + owed end
local g = 0
if want > 0 then
  spenders = spenders + 1
  local rem = daily - n
  if rem >= 1 then g = math.max(math.min(want, math.floor(rem / spenders)), 1) end
  n = n + g
  redis.call('HSET', KEYS[1], inst, now_ms)
elseif ret > 0 then
  redis.call('HDEL', KEYS[1], inst)
end
if #dead > 0 then redis.call('HDEL', KEYS[1], unpack(dead)) end
redis.call('HSET', KEYS[1], 'ws', ws, 'we', we, 'n', n, 't', tat)
redis.call('EXPIREAT', KEYS[1], we + 86400)
return {g, n, ws, we, math.max(spenders, 1), now_s, tonumber(t[2])}
`)

// leaseArgs are the ARGV of one leaseScript call; a call that only returns
// units passes no windows (it changes nothing once the window ended).
func (sh *sharedRedis) leaseArgs(p Policy, local time.Time, want, ret, retWs, owed, owedWs int64) []any {
	args := make([]any, 0, 14)
	args = append(args, p.Daily, want, sh.instanceField, ret, retWs, owed, owedWs, spenderStale.Milliseconds())
	if want == 0 && owed == 0 {
		return args
	}
	return p.Window.appendCandidates(args, local)
}

// grant makes the one round trip of a lease.
func (sh *sharedRedis) grant(ctx context.Context, key string, p Policy, local time.Time, want, ret, retWs, owed, owedWs int64) (grantAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, sh.timeout)
	defer cancel()
	vals, err := leaseScript.Run(ctx, sh.client, []string{RedisKey(sh.prefix, key)},
		sh.leaseArgs(p, local, want, ret, retWs, owed, owedWs)...).Int64Slice()
	if err != nil {
		return grantAnswer{}, err
	}
	if len(vals) != 7 {
		return grantAnswer{}, fmt.Errorf("redis script answered %d values, want 7", len(vals))
	}
	return grantAnswer{units: vals[0], n: vals[1], ws: vals[2], we: vals[3], spenders: vals[4],
		now: time.Unix(vals[5], vals[6]*int64(time.Microsecond))}, nil
}

// leaseReturn is units going back to Redis, or owed to it, for one key.
type leaseReturn struct {
	key          string
	policy       Policy
	ret, retWs   int64
	owed, owedWs int64
}

// collect takes from the table what should go back to Redis now: every
// lease when all is set (shutdown), else the idle ones; and what is owed.
// Entries of ended windows holding nothing owed, and entries holding
// nothing unused for leaseForget, are dropped, so the table only holds
// keys in use.
func (t *leaseTable) collect(now int64, all, redisUp bool) []leaseReturn {
	var out []leaseReturn
	for i := range t.shards {
		ls := &t.shards[i]
		ls.mu.Lock()
		for key, l := range ls.m {
			redisSec := (now + l.offset) / int64(time.Second)
			if l.known && redisSec >= l.we {
				l.left = 0 // the window took them
			}
			if l.owed > 0 && l.owedWs != l.ws && redisSec >= l.we {
				l.owed = 0
			}
			r := leaseReturn{key: key, policy: Policy{Daily: l.daily, Window: l.window}}
			if redisUp && l.left > 0 && (all || now-l.used > int64(leaseIdle)) {
				r.ret, r.retWs = l.left, l.ws
				l.left = 0
				l.want = max(l.want/2, 1)
			}
			if redisUp && l.owed > 0 {
				r.owed, r.owedWs = l.owed, l.owedWs
				l.owed = 0
			}
			if r.ret > 0 || r.owed > 0 {
				out = append(out, r)
			}
			if l.left == 0 && l.owed == 0 && r.owed == 0 && now-l.used > int64(leaseForget) {
				delete(ls.m, key)
			}
		}
		ls.mu.Unlock()
	}
	return out
}

// giveBack sends what collect took, in one pipeline bounded by the store's
// timeout (at least a second, at shutdown). Owed units that Redis did not
// acknowledge are kept for the next try; returned units that did not make
// it stay counted (the safe side).
func (sh *sharedRedis) giveBack(items []leaseReturn, timeout time.Duration) {
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	now := time.Now()
	pipe := sh.client.Pipeline()
	cmds := make([]*redis.Cmd, len(items))
	for i, it := range items {
		cmds[i] = leaseScript.Eval(ctx, pipe, []string{RedisKey(sh.prefix, it.key)},
			sh.leaseArgs(it.policy, now, 0, it.ret, it.retWs, it.owed, it.owedWs)...)
	}
	_, _ = pipe.Exec(ctx)
	for i, it := range items {
		if cmds[i].Err() != nil && it.owed > 0 {
			ls := sh.leases.shard(it.key)
			ls.mu.Lock()
			if l := ls.m[it.key]; l != nil && (l.owed == 0 || l.owedWs == it.owedWs) {
				l.owed, l.owedWs = l.owed+it.owed, it.owedWs
			}
			ls.mu.Unlock()
		}
	}
}

// sweep runs until stop, while Redis answers: every settleRetryEvery, the
// token settlements queued are retried; every leaseSweepEvery, idle leases
// go back and owed units are charged.
func (sh *sharedRedis) sweep() {
	defer sh.sweeping.Done()
	t := time.NewTicker(settleRetryEvery)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-sh.stop:
			return
		case now := <-t.C:
			if sh.down.Load() {
				continue
			}
			sh.retrySettles(sh.timeout)
			if now.Sub(last) >= leaseSweepEvery {
				last = now
				sh.giveBack(sh.leases.collect(now.UnixNano(), false, true), sh.timeout)
			}
		}
	}
}

// forget drops a key's lease (Reset: the counters it came from are gone).
func (t *leaseTable) forget(key string) {
	ls := t.shard(key)
	ls.mu.Lock()
	delete(ls.m, key)
	ls.mu.Unlock()
}
