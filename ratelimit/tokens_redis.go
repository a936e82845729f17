package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Token budgets in Redis: one hash per key, TokensRedisKey, in the key's
// hash slot (the braces of RedisKey make the hash tag), with fields
//
//	ds, de  the daily window's start and end (Unix seconds)
//	du      tokens used in it
//	ms      the start of the UTC minute mu counts in (Unix seconds)
//	mu      tokens used in that minute
//	m:<model>  tokens used in the daily window by a model with a budget
//
// Every write sets all five fixed fields, so the hash's length less five is
// the models it counts (at most maxTokenModels). A new daily window deletes
// the hash before writing it again, which forgets the models of the old one.
// The hash expires a day after its window ends, like the request counters.

// tokenFixedFields is how many fields of a token hash are not models.
const tokenFixedFields = 5

// TokensRedisKey is the Redis hash holding a key id's token budgets, for
// operators.
func TokensRedisKey(prefix, keyID string) string {
	return RedisKey(prefix, keyID) + ":tokens"
}

// Reservations in Redis, beside the token hash and in its hash slot:
//
//	<tokens>:r  a hash: reservation id -> "tokens:ds:ms:model field"
//	<tokens>:e  a sorted set: reservation id, scored by when it expires
//	<tokens>:x  a sorted set: ids given back (<id>), cancelled (c:<id>) or
//	            charged from an instance's memory (<id>l), scored by when
//
// A settlement with an id in :r applies used - tokens and deletes it. Each
// script call on the key first gives back (at most reapBatch of) the
// reservations past their expiry, as a settlement of 0 would, and marks
// them in :x: a settlement that comes later adds the tokens used alone.
// A settlement that finds neither does nothing: it was made before. A
// cancellation (of a reservation whose answer was lost) gives it back, or,
// should it not have arrived yet, marks its id so that it charges nothing
// when it does. Marks are kept for reapedMarkTTL. Reservation ids are
// "<instance>:<n>", unique across the cluster.
//
// reapLua is the shared part: reap(now) gives back what expired.
const reapLua = `
local function reap(now, xttl)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 32)
  if #ids == 0 then return end
  local st = redis.call('HMGET', KEYS[1], 'ds', 'de', 'du', 'ms', 'mu')
  local ds, de = tonumber(st[1]) or 0, tonumber(st[2]) or 0
  local du, ms, mu = tonumber(st[3]) or 0, tonumber(st[4]) or 0, tonumber(st[5]) or 0
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', KEYS[2], id)
    if v then
      local n, rd, rm, mf = string.match(v, '^([^:]*):([^:]*):([^:]*):(.*)$')
      n, rd, rm = tonumber(n) or 0, tonumber(rd), tonumber(rm)
      if st[1] and rd == ds and now < de then
        du = math.max(du - n, 0)
        if mf ~= '' then
          local mv = redis.call('HGET', KEYS[1], mf)
          if mv then redis.call('HSET', KEYS[1], mf, math.max(tonumber(mv) - n, 0)) end
        end
      end
      if st[1] and rm == ms and now < ms + 60 then mu = math.max(mu - n, 0) end
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZADD', KEYS[4], now, id)
      redis.call('EXPIRE', KEYS[4], xttl)
    end
    redis.call('ZREM', KEYS[3], id)
  end
  if st[1] then redis.call('HSET', KEYS[1], 'du', du, 'mu', mu) end
end
`

// reserveScript is a whole reservation, run atomically on the server with
// the server's clock; it mirrors Memory.Reserve (tokenState.view, decide,
// charge). KEYS: the token hash, :r, :e, :x. ARGV: n, daily, per-minute,
// model daily budgets (0 for none), the model's field ("" for none), peek
// (1 or 0), the most models a key may count, the reservation's id, its
// time to live and the marks' (seconds), then candidate daily windows as
// start,end pairs (Unix seconds) computed by the instance around its own
// clock, as for takeScript. It answers: the refusing budget (0 none, 1
// daily, 2 minute, 3 model), ds, de, du, ms, mu, the model's use, whether
// the model found no room (1 or 0), and the server's time (seconds,
// microseconds); or {-1} for a reservation cancelled before it arrived.
var reserveScript = redis.NewScript(reapLua + `
local t = redis.call('TIME')
local now = tonumber(t[1])
local n = tonumber(ARGV[1])
local daily = tonumber(ARGV[2])
local perminute = tonumber(ARGV[3])
local mdaily = tonumber(ARGV[4])
local mf = ARGV[5]
local peek = ARGV[6] == '1'
local maxm = tonumber(ARGV[7])
local id = ARGV[8]
local ttl = tonumber(ARGV[9])
local xttl = tonumber(ARGV[10])
if not peek then
  reap(now, xttl)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - xttl)
  if redis.call('ZSCORE', KEYS[4], 'c:' .. id) then
    return {-1}
  end
end
local st = redis.call('HMGET', KEYS[1], 'ds', 'de', 'du', 'ms', 'mu')
local ds = tonumber(st[1]) or 0
local de = tonumber(st[2]) or 0
local du = tonumber(st[3]) or 0
local ms = tonumber(st[4]) or 0
local mu = tonumber(st[5]) or 0
local rolled = false
if now >= de then
  local found = false
  for i = 11, #ARGV, 2 do
    local s, e = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    if now >= s and now < e then
      ds, de, du, rolled, found = s, e, 0, true, true
      break
    end
  end
  if not found then
    return redis.error_reply('ERR apikey: no daily window holds the server time; is this instance clock off by over a day?')
  end
end
if now >= ms + 60 then
  ms, mu = now - now % 60, 0
end
local mused, mfull = 0, 0
if mf ~= '' and not rolled then
  local v = redis.call('HGET', KEYS[1], mf)
  if v then
    mused = tonumber(v)
  elseif redis.call('HLEN', KEYS[1]) - 5 >= maxm then
    mfull = 1
  end
end
local denied = 0
if daily > 0 and n > daily - du then
  denied = 1
elseif perminute > 0 and n > perminute - mu then
  denied = 2
elseif mf ~= '' and (mfull == 1 or n > mdaily - mused) then
  denied = 3
end
if denied == 0 and not peek then
  if rolled then
    redis.call('DEL', KEYS[1])
  end
  du, mu = du + n, mu + n
  if mf ~= '' then
    mused = mused + n
    redis.call('HSET', KEYS[1], 'ds', ds, 'de', de, 'du', du, 'ms', ms, 'mu', mu, mf, mused)
  else
    redis.call('HSET', KEYS[1], 'ds', ds, 'de', de, 'du', du, 'ms', ms, 'mu', mu)
  end
  redis.call('EXPIREAT', KEYS[1], de + 86400)
  redis.call('HSET', KEYS[2], id, ARGV[1] .. ':' .. ds .. ':' .. ms .. ':' .. mf)
  redis.call('ZADD', KEYS[3], now + ttl, id)
  redis.call('EXPIREAT', KEYS[2], de + 86400)
  redis.call('EXPIREAT', KEYS[3], de + 86400)
end
return {denied, ds, de, du, ms, mu, mused, mfull, now, tonumber(t[2])}
`)

// settleScript is a whole settlement, atomically with the server's clock;
// it mirrors tokenState.settle. KEYS as for reserveScript. ARGV: the tokens
// used, the reservation's id, the mode ('s' settle, 'c' cancel: give it
// back, 'l' charge tokens used by a reservation made in an instance's
// memory while Redis failed, once), the reservation's day and minute
// starts, the model's field ("" for none), the most models a key may
// count, the marks' time to live (seconds), and for 'l' the end of the
// reservation's day (the hash is made if the key has none yet). The delta applied is used
// - tokens for a pending reservation, used for one given back before or
// for 'l', -tokens for 'c'. It answers whether the day and the minute were
// still current (1 or 0 each), ds, de, du, ms, mu and the model's use; or
// {0, 0} when there is nothing to correct (settled before, or the hash is
// gone: reset, or expired).
var settleScript = redis.NewScript(reapLua + `
local t = redis.call('TIME')
local now = tonumber(t[1])
local used = tonumber(ARGV[1])
local id = ARGV[2]
local mode = ARGV[3]
local rday = tonumber(ARGV[4])
local rmin = tonumber(ARGV[5])
local mf = ARGV[6]
local maxm = tonumber(ARGV[7])
local xttl = tonumber(ARGV[8])
local dend = tonumber(ARGV[9])
reap(now, xttl)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - xttl)
local delta = 0
local pend = redis.call('HGET', KEYS[2], id)
if pend then
  -- the reservation's own windows and model (a cancellation knows none)
  local pn, pd, pm, pf = string.match(pend, '^([^:]*):([^:]*):([^:]*):(.*)$')
  local n = tonumber(pn) or 0
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  if mode == 'c' then
    rday, rmin, mf = tonumber(pd), tonumber(pm), pf
    delta = -n
    redis.call('ZADD', KEYS[4], now, 'c:' .. id)
    redis.call('EXPIRE', KEYS[4], xttl)
  else
    delta = used - n
  end
elseif mode == 's' then
  if not redis.call('ZSCORE', KEYS[4], id) then
    return {0, 0}
  end
  delta = used
  redis.call('ZREM', KEYS[4], id)
else
  -- 'c' marks c:<id>, 'l' marks <id>: each applies once
  local mark = id
  if mode == 'c' then mark = 'c:' .. id end
  if redis.call('ZSCORE', KEYS[4], mark) then
    return {0, 0}
  end
  redis.call('ZADD', KEYS[4], now, mark)
  redis.call('EXPIRE', KEYS[4], xttl)
  if mode == 'c' then
    return {0, 0}
  end
  delta = used
end
local st = redis.call('HMGET', KEYS[1], 'ds', 'de', 'du', 'ms', 'mu')
if not st[1] and mode == 'l' and now < dend then
  -- the key's first tokens were counted while Redis failed
  st = {rday, dend, 0, rmin, 0}
  redis.call('HSET', KEYS[1], 'ds', rday, 'de', dend, 'du', 0, 'ms', rmin, 'mu', 0)
  redis.call('EXPIREAT', KEYS[1], dend + 86400)
end
if not st[1] or delta == 0 then
  return {0, 0}
end
local ds = tonumber(st[1]) or 0
local de = tonumber(st[2]) or 0
local du = tonumber(st[3]) or 0
local ms = tonumber(st[4]) or 0
local mu = tonumber(st[5]) or 0
local dayok, minok, mused = 0, 0, 0
if ds == rday and now < de then
  dayok = 1
  du = math.max(du + delta, 0)
  redis.call('HSET', KEYS[1], 'du', du)
  if mf ~= '' then
    local v = redis.call('HGET', KEYS[1], mf)
    if v then
      mused = math.max(tonumber(v) + delta, 0)
      redis.call('HSET', KEYS[1], mf, mused)
    elseif delta > 0 and redis.call('HLEN', KEYS[1]) - 5 < maxm then
      mused = delta
      redis.call('HSET', KEYS[1], mf, mused)
    end
  end
end
if ms == rmin and now < ms + 60 then
  minok = 1
  mu = math.max(mu + delta, 0)
  redis.call('HSET', KEYS[1], 'mu', mu)
end
return {dayok, minok, ds, de, du, ms, mu, mused}
`)

// modelField is the hash field of p's model, or "" when p has no model budget.
func modelField(p TokenPolicy) string {
	if p.ModelDaily > 0 {
		return "m:" + p.Model
	}
	return ""
}

// Reserve charges n tokens to every budget of p in Redis, in one script
// call, if each has room, or none; while Redis fails, as on_failure says
// (local: in this instance's memory, and the reservation is marked Local).
func (s *RedisStore) Reserve(ctx context.Context, key string, p TokenPolicy, n int64) (TokenResult, error) {
	if err := checkTokens(n); err != nil {
		return TokenResult{}, err
	}
	return s.tokenCall(ctx, key, p, n, false)
}

// PeekTokens reads where key's token budgets stand in Redis, charging
// nothing; while Redis fails, as on_failure says.
func (s *RedisStore) PeekTokens(ctx context.Context, key string, p TokenPolicy) (TokenResult, error) {
	return s.tokenCall(ctx, key, p, 0, true)
}

// tokenCall is call() for token budgets: the same failure handling, so that
// requests and tokens of a key fail over together.
func (s *RedisStore) tokenCall(ctx context.Context, key string, p TokenPolicy, n int64, peekOnly bool) (TokenResult, error) {
	sh := s.shared
	if !sh.down.Load() {
		var id uint64
		if !peekOnly {
			id = reservationIDs.Add(1)
		}
		res, v, err := sh.reserveTokens(ctx, key, p, n, s.now(), peekOnly, id)
		if err == nil {
			sh.failures.Store(0)
			if !peekOnly && res.Allowed {
				// Local counting, should Redis fail, goes on from here.
				sh.local.mirrorTokens(key, p, v)
				res.Reservation.ID = id
			}
			return res, nil
		}
		var answered redis.Error
		if !peekOnly && !errors.As(err, &answered) {
			// The script may have run and charged (a lost answer): it is
			// never sent again, but cancelled by its id, in the background
			// until Redis acknowledges; a cancellation that arrives first
			// voids it.
			sh.settles.add(pendingSettle{key: key, field: sh.reservationField(id), mode: 'c', since: time.Now().UnixNano()})
		}
		if ctx.Err() != nil {
			return TokenResult{}, err // the client went away; Redis is not to blame
		}
		sh.failed(err)
	}
	switch s.OnFailure {
	case "open":
		return TokenResult{Allowed: true, Uncounted: true, Now: time.Now(), Reservation: Reservation{Uncounted: true}}, nil
	case "local":
		if peekOnly {
			return sh.local.PeekTokens(ctx, key, p)
		}
		// Within the outage allowance, as for requests (lease.go).
		res, err := sh.local.reserveWithin(key, p, n, s.spendersOf(key))
		res.Reservation.Local = res.Allowed
		return res, err
	}
	return TokenResult{}, ErrUnavailable
}

// reservationField is a reservation's id in Redis: this instance's id and
// the reservation's number.
func (sh *sharedRedis) reservationField(id uint64) string {
	return sh.instanceID + ":" + strconv.FormatUint(id, 36)
}

// tokenKeys are the Redis keys of a key id's token budgets and reservations.
func (sh *sharedRedis) tokenKeys(key string) []string {
	h := TokensRedisKey(sh.prefix, key)
	return []string{h, h + ":r", h + ":e", h + ":x"}
}

// Settle replaces reservation r by the tokens used, in the windows still
// current, never below zero, once per reservation: in this instance's
// memory for a Local reservation (and the tokens used are then charged to
// Redis too, once, when it answers), in Redis (one script call) otherwise,
// and not at all for an uncounted one. A Redis settlement that fails
// (timeout, Redis down) is queued and retried in the background every
// settleRetryEvery while Redis answers, for up to settleRetryFor, until
// Redis acknowledges it; it returns an error (wrapping ErrUnavailable)
// only when the queue is full (maxPendingSettles), and the reservation is
// then given back by Redis once it expires (reservationTTL), the tokens
// used uncounted. The settlement is made even when ctx is cancelled,
// bounded by the store's timeout, since the tokens it records were spent
// whether or not the client stayed.
func (s *RedisStore) Settle(ctx context.Context, key string, p TokenPolicy, r Reservation, used int64) error {
	sh := s.shared
	used = min(max(used, 0), maxTokens)
	ps := pendingSettle{key: key, model: modelField(p), day: r.Day, minute: r.Minute, used: used,
		mode: 's', since: time.Now().UnixNano()}
	switch {
	case r.Uncounted:
		return nil
	case r.Local:
		if !sh.local.settleOnce(key, p, r, used) || used == 0 {
			return nil
		}
		ps.field, ps.mode = sh.reservationField(r.ID)+"l", 'l'
		_, end := p.Window.Bounds(time.Unix(r.Day, 0))
		ps.dayEnd = end.Unix()
	default:
		ps.field = sh.reservationField(r.ID)
	}
	if !sh.down.Load() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sh.timeout)
		err := sh.settle(ctx, ps)
		cancel()
		if err == nil {
			sh.failures.Store(0)
			return nil
		}
		sh.failed(err)
	}
	if !sh.settles.add(ps) {
		return fmt.Errorf("%w: the queue of settlements to retry is full; %d tokens not settled", ErrUnavailable, used)
	}
	return nil
}

// settle makes the one round trip of a settlement.
func (sh *sharedRedis) settle(ctx context.Context, ps pendingSettle) error {
	vals, err := settleScript.Run(ctx, sh.client, sh.tokenKeys(ps.key), ps.args()...).Int64Slice()
	if err == nil && len(vals) != 2 && len(vals) != 8 {
		err = fmt.Errorf("redis script answered %d values, want 2 or 8", len(vals))
	}
	if err != nil {
		return err
	}
	if len(vals) == 8 && vals[0] == 1 {
		p := TokenPolicy{}
		if ps.model != "" {
			p = TokenPolicy{Model: ps.model[2:], ModelDaily: 1}
		}
		sh.local.mirrorTokens(ps.key, p, tokenView{dayStart: vals[2], dayEnd: vals[3], dayUsed: vals[4],
			minute: vals[5], minuteUsed: vals[6], modelUsed: vals[7]})
	}
	return nil
}

// reserveTokens makes the one round trip of a reservation.
func (sh *sharedRedis) reserveTokens(ctx context.Context, key string, p TokenPolicy, n int64, local time.Time, peekOnly bool, id uint64) (TokenResult, tokenView, error) {
	ctx, cancel := context.WithTimeout(ctx, sh.timeout)
	defer cancel()
	peekArg := "0"
	if peekOnly {
		peekArg = "1"
	}
	args := make([]any, 0, 16)
	args = append(args, n, p.Daily, p.PerMinute, p.ModelDaily, modelField(p), peekArg, maxTokenModels,
		sh.reservationField(id), int64(reservationTTL/time.Second), int64(reapedMarkTTL/time.Second))
	args = p.Window.appendCandidates(args, local)
	vals, err := reserveScript.Run(ctx, sh.client, sh.tokenKeys(key), args...).Int64Slice()
	if err != nil {
		return TokenResult{}, tokenView{}, err
	}
	if len(vals) != 10 {
		return TokenResult{}, tokenView{}, fmt.Errorf("redis script answered %d values, want 10", len(vals))
	}
	v := tokenView{dayStart: vals[1], dayEnd: vals[2], dayUsed: vals[3], minute: vals[4], minuteUsed: vals[5],
		modelUsed: vals[6], modelFull: vals[7] == 1}
	now := time.Unix(vals[8], vals[9]*int64(time.Microsecond))
	res := v.result(now, p, n, TokenLimit(vals[0]))
	if peekOnly {
		res.Reservation = Reservation{}
	}
	return res, v, nil
}
