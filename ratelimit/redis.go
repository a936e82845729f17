package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(RedisStore{})
}

// Defaults of the Redis store.
const (
	DefaultRedisKeyPrefix = "apikey:"
	DefaultRedisTimeout   = 50 * time.Millisecond
	DefaultRedisOnFailure = "local"
)

// probeInterval is how often a Redis that failed is asked whether it is back.
const probeInterval = 250 * time.Millisecond

// ErrUnavailable means the store could not count the request.
var ErrUnavailable = errors.New("counter store unavailable")

// redisPool shares one client (and its local fallback counters) per Redis
// configuration among every route, across config reloads.
var redisPool = caddy.NewUsagePool()

// RedisStore keeps counters in Redis (or Valkey, or a Redis Cluster), so that
// several Caddy instances share one budget per key. Each request is one
// round trip: a Lua script that reads the server's clock, picks the daily
// window, checks both limits, counts, and sets the key's expiry, atomically.
type RedisStore struct {
	// The Redis to use, as for keys redis (addresses, master_name,
	// username, password, db, tls, timeout). The timeout bounds each call,
	// connecting included; default here: 50ms.
	redisconn.Config
	// KeyPrefix starts every Redis key the store writes. Default: "apikey:".
	KeyPrefix string `json:"key_prefix,omitempty"`
	// OnFailure says what happens to requests while Redis fails: "closed"
	// refuses them with 503, "open" lets them through uncounted, "local"
	// (the default) counts them in this instance's memory until Redis
	// answers again.
	OnFailure string `json:"on_failure,omitempty"`

	shared  *sharedRedis
	poolKey string
	now     func() time.Time // this instance's clock; only picks candidate windows
}

// CaddyModule returns the Caddy module information.
func (RedisStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.apikey.counters.redis",
		New: func() caddy.Module { return new(RedisStore) },
	}
}

// Provision checks the settings and joins (or opens) the shared client. It
// does not need Redis to be up.
func (s *RedisStore) Provision(ctx caddy.Context) error {
	if err := redisconn.Shared(ctx, &s.Config, "counters redis"); err != nil {
		return err
	}
	switch s.OnFailure {
	case "":
		s.OnFailure = DefaultRedisOnFailure
	case "open", "closed", "local":
	default:
		return fmt.Errorf("counters redis: on_failure %q: want open, closed or local", s.OnFailure)
	}
	if s.KeyPrefix == "" {
		s.KeyPrefix = DefaultRedisKeyPrefix
	}
	timeout := time.Duration(s.Timeout)
	if timeout == 0 {
		timeout = DefaultRedisTimeout
	}
	if timeout < 0 {
		return errors.New("counters redis: timeout must be positive")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.Config.Check(); err != nil {
		return fmt.Errorf("counters redis: %w", err)
	}
	s.Timeout = caddy.Duration(timeout)
	key := s.Config.Identity() + "|" + s.KeyPrefix
	val, _, err := redisPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openRedis(s, timeout)
	})
	if err != nil {
		return err
	}
	s.shared, s.poolKey = val.(*sharedRedis), key
	return nil
}

// Cleanup lets go of the shared client. It copes with a failed Provision.
func (s *RedisStore) Cleanup() error {
	if s.poolKey == "" {
		return nil
	}
	_, err := redisPool.Delete(s.poolKey)
	s.poolKey = ""
	return err
}

// Retain returns the store's Redis client for another part of the gateway
// that shares its Redis (usage counts), and the function that lets go of
// it: the client stays open until that is called, whenever the store
// itself is cleaned up. KeyPrefix prefixes that part's keys too.
func (s *RedisStore) Retain() (redis.UniversalClient, func()) {
	val, _, err := redisPool.LoadOrNew(s.poolKey, func() (caddy.Destructor, error) { return s.shared, nil })
	if err != nil {
		return s.shared.client, func() {}
	}
	key := s.poolKey
	var once sync.Once
	return val.(*sharedRedis).client, func() { once.Do(func() { _, _ = redisPool.Delete(key) }) }
}

// Take counts the request: from a lease of the key's window (lease.go) for
// a policy without a burst rate, in Redis (one round trip) for one with a
// burst rate, which GCRA must check exactly across the cluster; or as
// on_failure says while Redis fails.
func (s *RedisStore) Take(ctx context.Context, key string, p Policy) (Result, error) {
	if p.Burst.IsZero() {
		return s.takeLeased(ctx, key, p)
	}
	return s.call(ctx, key, p, false)
}

// Peek reports where key stands without spending anything: from the key's
// lease when this instance holds a current one (as of its last grant), else
// read in Redis.
func (s *RedisStore) Peek(ctx context.Context, key string, p Policy) (Result, error) {
	if p.Burst.IsZero() {
		if res, ok := s.peekLeased(key, p); ok {
			return res, nil
		}
	}
	return s.call(ctx, key, p, true)
}

// PeekLocal is where key stood when this instance last counted it: its
// lease, or what Redis answered its last request (mirrored in memory); no
// Redis call.
func (s *RedisStore) PeekLocal(key string, p Policy) (Result, bool) {
	if p.Burst.IsZero() {
		if res, ok := s.peekLeased(key, p); ok {
			return res, true
		}
	}
	return s.shared.local.PeekKnown(key, p)
}

func (s *RedisStore) call(ctx context.Context, key string, p Policy, peekOnly bool) (Result, error) {
	sh := s.shared
	if !sh.down.Load() {
		res, st, err := sh.run(ctx, key, p, s.now(), peekOnly)
		if err == nil {
			sh.failures.Store(0)
			if !peekOnly {
				// Keep this instance's memory in step, so a switch to local
				// counting goes on from here rather than from zero.
				sh.local.Mirror(key, st)
			}
			return res, nil
		}
		if ctx.Err() != nil {
			return Result{}, err // the client went away; Redis is not to blame
		}
		sh.failed(err)
	}
	switch s.OnFailure {
	case "open":
		return Result{Allowed: true, Uncounted: true, Now: time.Now()}, nil
	case "local":
		if peekOnly {
			return sh.local.Peek(ctx, key, p)
		}
		return sh.local.Take(ctx, key, p)
	}
	return Result{}, ErrUnavailable
}

// Reset forgets a key's counters and token budgets, in Redis and in the
// local fallback.
func (s *RedisStore) Reset(ctx context.Context, key string) error {
	s.shared.local.Reset(key)
	s.shared.leases.forget(key)
	ctx, cancel := context.WithTimeout(ctx, s.shared.timeout)
	defer cancel()
	names := append([]string{RedisKey(s.shared.prefix, key)}, s.shared.tokenKeys(key)...)
	for _, what := range announcements {
		names = append(names, announceKey(s.shared.prefix, key, what))
	}
	return s.shared.client.Del(ctx, names...).Err()
}

// announcements are the marks Reset forgets, so a reset quota warns again.
var announcements = []string{"warning80", "warning90", "quota_exceeded"}

func announceKey(prefix, key, what string) string {
	return RedisKey(prefix, key) + ":announced:" + what
}

// FirstToAnnounce sets a mark that lasts until until, if no instance set
// it before (SET NX, in the key's hash slot).
func (s *RedisStore) FirstToAnnounce(ctx context.Context, key, what string, until time.Time) (bool, error) {
	res, err := s.shared.client.SetArgs(ctx, announceKey(s.shared.prefix, key, what), 1,
		redis.SetArgs{Mode: "NX", ExpireAt: until}).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil // set before, by this instance or another
	}
	return err == nil && res == "OK", err
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	counters redis {
//	    address <host:port> ...
//	    master_name <name>
//	    username <name>
//	    password <value>
//	    db <n>
//	    tls
//	    key_prefix <prefix>
//	    timeout <duration>
//	    on_failure open|closed|local
//	}
func (s *RedisStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store name
	if d.NextArg() {
		return d.ArgErr()
	}
	// Without a block (or an address), the global apikey { redis { … } }.
	err := redisconn.UnmarshalBlock(d, &s.Config, map[string]func() error{
		"key_prefix": func() error {
			if !d.AllArgs(&s.KeyPrefix) {
				return d.ArgErr()
			}
			return nil
		},
		"on_failure": func() error {
			if !d.AllArgs(&s.OnFailure) {
				return d.ArgErr()
			}
			if s.OnFailure != "open" && s.OnFailure != "closed" && s.OnFailure != "local" {
				return d.Errf("on_failure %q: want open, closed or local", s.OnFailure)
			}
			return nil
		},
	})
	if err == nil && len(s.Addresses) == 0 && (s.Username != "" || s.Password != "" || s.DB != 0 || s.TLS || s.MasterName != "" || s.Timeout != 0) {
		return d.Err("counters redis needs an address (or none of its settings, to use the global apikey redis)")
	}
	return err
}

// sharedRedis is the pooled part: the client, the local fallback counters,
// and whether Redis is known to be failing.
type sharedRedis struct {
	client  redis.UniversalClient
	release func() error // lets go of the shared client
	prefix  string
	timeout time.Duration
	mode    string // on_failure of the store that opened it, for the log
	local   *Memory
	// leases is the units of keys' windows this instance holds (lease.go);
	// instanceField names this instance in a key's hash ("i:<random id>").
	leases        *leaseTable
	instanceID    string
	instanceField string
	// settles is the token settlements to retry (settle_queue.go).
	settles settleQueue

	down     atomic.Bool
	failures atomic.Int64 // transport failures in a row
	lastLog  atomic.Int64 // when an answer error was last logged, Unix ns
	stop     chan struct{}
	probing  sync.WaitGroup
	sweeping sync.WaitGroup
	once     sync.Once
}

func openRedis(s *RedisStore, timeout time.Duration) (*sharedRedis, error) {
	// The client is shared with every part of the gateway that names the
	// same Redis (keys redis, another route's counters): redisconn's
	// options make no retries and follow no cluster redirects, since a call
	// whose answer was lost may have counted; each call here is bounded by
	// its own context deadline.
	client, release, err := redisconn.Open(s.Config)
	if err != nil {
		return nil, err
	}
	sh := &sharedRedis{
		client:     client,
		release:    release,
		prefix:     s.KeyPrefix,
		timeout:    timeout,
		mode:       s.OnFailure,
		local:      NewMemory(nil),
		leases:     newLeaseTable(),
		instanceID: newInstanceID(),
		stop:       make(chan struct{}),
	}
	sh.instanceField = "i:" + sh.instanceID
	sh.sweeping.Add(1)
	go sh.sweep()
	return sh, nil
}

func redisLogger() *zap.Logger { return caddy.Log().Named("http.apikey.counters.redis") }

// downAfter is how many transport failures in a row switch the instance to
// on_failure for every request: one slow call in a burst is not an outage.
const downAfter = 3

// failed handles a failed call. The request itself is handled as on_failure
// says either way. An error Redis answered (WRONGTYPE, NOPERM, OOM, a script
// error) belongs to that call and is logged at most every 10 seconds; a
// transport failure (timeout, refused, reset) repeated downAfter times
// marks Redis down, logged once, until the prober finds it back.
func (sh *sharedRedis) failed(err error) {
	var answered redis.Error
	if errors.As(err, &answered) {
		now := time.Now().UnixNano()
		if last := sh.lastLog.Load(); now-last > int64(10*time.Second) && sh.lastLog.CompareAndSwap(last, now) {
			redisLogger().Error("redis refused a call; this request is handled as on_failure says",
				zap.String("on_failure", sh.mode), zap.Error(err))
		}
		return
	}
	if sh.failures.Add(1) < downAfter || !sh.down.CompareAndSwap(false, true) {
		return
	}
	redisLogger().Warn("redis is failing; requests are handled as on_failure says until it answers again",
		zap.String("on_failure", sh.mode), zap.Error(err))
	sh.probing.Add(1)
	go sh.probe()
}

func (sh *sharedRedis) probe() {
	defer sh.probing.Done()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-sh.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), sh.timeout)
			err := sh.client.Ping(ctx).Err()
			cancel()
			if err == nil {
				sh.failures.Store(0)
				sh.down.Store(false)
				redisLogger().Info("redis answers again; counting in redis")
				return
			}
		}
	}
}

// Destruct stops the prober and the sweeper, gives back every unit leased,
// charges what is owed and tries the settlements queued once more (each one
// pipeline, bounded by the timeout and at least a second), and closes the
// client.
func (sh *sharedRedis) Destruct() error {
	sh.once.Do(func() { close(sh.stop) })
	sh.probing.Wait()
	sh.sweeping.Wait()
	sh.giveBack(sh.leases.collect(time.Now().UnixNano(), true, true), max(sh.timeout, time.Second))
	sh.retrySettles(max(sh.timeout, time.Second))
	return sh.release()
}

// takeScript is the whole decision, run atomically on the server with the
// server's clock. It mirrors decide(): the daily window runs to its own end;
// both limits are checked before either is charged; the key's expiry is set
// in the same step. ARGV: daily limit, burst limit, burst period (µs), peek
// (1 or 0), then candidate windows as start,end pairs (Unix seconds)
// computed by the instance around its own clock; the one holding the
// server's time is used, so instance clocks that differ cannot move a reset.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_us = now_s * 1000000 + tonumber(t[2])
local daily = tonumber(ARGV[1])
local blimit = tonumber(ARGV[2])
local bperiod = tonumber(ARGV[3])
local peek = ARGV[4] == '1'
local st = redis.call('HMGET', KEYS[1], 'ws', 'we', 'n', 't')
local ws = tonumber(st[1]) or 0
local we = tonumber(st[2]) or 0
local n = tonumber(st[3]) or 0
local tat = tonumber(st[4]) or 0
if now_s >= we then
  local found = false
  for i = 5, #ARGV, 2 do
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
local newtat = 0
if blimit > 0 then
  newtat = math.max(tat, now_us) + math.floor(bperiod / blimit)
end
local allowed = 0
if not peek then
  if n < daily and (blimit == 0 or newtat - now_us <= bperiod) then
    allowed = 1
    n = n + 1
    if blimit > 0 then tat = newtat end
  end
  redis.call('HSET', KEYS[1], 'ws', ws, 'we', we, 'n', n, 't', tat)
  redis.call('EXPIREAT', KEYS[1], we + 86400)
end
return {allowed, n, ws, we, tat, newtat, now_s, tonumber(t[2])}
`)

// run makes the one round trip of a request.
func (sh *sharedRedis) run(ctx context.Context, key string, p Policy, local time.Time, peekOnly bool) (Result, state, error) {
	ctx, cancel := context.WithTimeout(ctx, sh.timeout)
	defer cancel()
	args := make([]any, 0, 10)
	peekArg := "0"
	if peekOnly {
		peekArg = "1"
	}
	args = append(args, p.Daily, p.Burst.Limit, int64(p.Burst.Period/time.Microsecond), peekArg)
	args = p.Window.appendCandidates(args, local)
	// The braces make a hash tag: in a cluster, all of a key's state is in
	// one slot (it is one hash anyway).
	redisKey := RedisKey(sh.prefix, key)
	vals, err := takeScript.Run(ctx, sh.client, []string{redisKey}, args...).Int64Slice()
	if err != nil {
		return Result{}, state{}, err
	}
	if len(vals) != 8 {
		return Result{}, state{}, fmt.Errorf("redis script answered %d values, want 8", len(vals))
	}
	s := state{windowStart: vals[2], windowEnd: vals[3], count: vals[1], tat: vals[4] * int64(time.Microsecond)}
	now := time.Unix(vals[6], vals[7]*int64(time.Microsecond))
	if peekOnly {
		res := Result{Allowed: true}
		s.report(&res, now, p)
		return res, s, nil
	}
	return s.result(now, p, vals[0] == 1, vals[5]*int64(time.Microsecond)), s, nil
}

// RedisKey is the Redis key holding a key id's counters, for operators.
func RedisKey(prefix, keyID string) string {
	return prefix + "{" + keyID + "}"
}

// Interface guards
var (
	_ Store                 = (*RedisStore)(nil)
	_ TokenStore            = (*RedisStore)(nil)
	_ caddy.Provisioner     = (*RedisStore)(nil)
	_ caddy.CleanerUpper    = (*RedisStore)(nil)
	_ caddyfile.Unmarshaler = (*RedisStore)(nil)
)
