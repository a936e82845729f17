package ratelimit

import (
	"context"
	"fmt"
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

// reserveScript is a whole reservation, run atomically on the server with
// the server's clock; it mirrors Memory.Reserve (tokenState.view, decide,
// charge). ARGV: n, daily, per-minute, model daily budgets (0 for none), the
// model's field ("" for none), peek (1 or 0), the most models a key may
// count, then candidate daily windows as start,end pairs (Unix seconds)
// computed by the instance around its own clock, as for takeScript. It
// answers: the refusing budget (0 none, 1 daily, 2 minute, 3 model), ds,
// de, du, ms, mu, the model's use, whether the model found no room (1 or 0),
// and the server's time (seconds, microseconds).
var reserveScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1])
local n = tonumber(ARGV[1])
local daily = tonumber(ARGV[2])
local perminute = tonumber(ARGV[3])
local mdaily = tonumber(ARGV[4])
local mf = ARGV[5]
local peek = ARGV[6] == '1'
local maxm = tonumber(ARGV[7])
local st = redis.call('HMGET', KEYS[1], 'ds', 'de', 'du', 'ms', 'mu')
local ds = tonumber(st[1]) or 0
local de = tonumber(st[2]) or 0
local du = tonumber(st[3]) or 0
local ms = tonumber(st[4]) or 0
local mu = tonumber(st[5]) or 0
local rolled = false
if now >= de then
  local found = false
  for i = 8, #ARGV, 2 do
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
end
return {denied, ds, de, du, ms, mu, mused, mfull, now, tonumber(t[2])}
`)

// settleScript is a whole settlement, atomically with the server's clock;
// it mirrors tokenState.settle. ARGV: delta, the reservation's day and
// minute starts, the model's field ("" for none), the most models a key may
// count. It answers whether the day and the minute were still current
// (1 or 0 each), ds, de, du, ms, mu and the model's use; or {0, 0} when the
// hash is gone (reset, or expired), which leaves nothing to correct.
var settleScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1])
local delta = tonumber(ARGV[1])
local rday = tonumber(ARGV[2])
local rmin = tonumber(ARGV[3])
local mf = ARGV[4]
local maxm = tonumber(ARGV[5])
local st = redis.call('HMGET', KEYS[1], 'ds', 'de', 'du', 'ms', 'mu')
if not st[1] then
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
		res, v, err := sh.reserveTokens(ctx, key, p, n, s.now(), peekOnly)
		if err == nil {
			sh.failures.Store(0)
			if !peekOnly && res.Allowed {
				// Local counting, should Redis fail, goes on from here.
				sh.local.mirrorTokens(key, p, v)
			}
			return res, nil
		}
		if ctx.Err() != nil {
			return TokenResult{}, err // the client went away; Redis is not to blame
		}
		// The script may have run and charged (a lost answer): it is never
		// sent again, and the request is handled as on_failure says.
		sh.failed(err)
	}
	switch s.OnFailure {
	case "open":
		return TokenResult{Allowed: true, Uncounted: true, Now: time.Now(), Reservation: Reservation{Uncounted: true}}, nil
	case "local":
		if peekOnly {
			return sh.local.PeekTokens(ctx, key, p)
		}
		res, err := sh.local.Reserve(ctx, key, p, n)
		res.Reservation.Local = res.Allowed
		return res, err
	}
	return TokenResult{}, ErrUnavailable
}

// Settle replaces reservation r by the tokens used, in the windows still
// current, never below zero: in this instance's memory for a Local
// reservation, in Redis (one script call) otherwise, and not at all for an
// uncounted one. A Redis settlement that fails is not retried, nor made
// locally: the reservation stays charged as it was, and the error (wrapping
// ErrUnavailable) is for the caller to log. The settlement is made even
// when ctx is cancelled, bounded by the store's timeout, since the tokens
// it records were spent whether or not the client stayed.
func (s *RedisStore) Settle(ctx context.Context, key string, p TokenPolicy, r Reservation, used int64) error {
	sh := s.shared
	switch {
	case r.Uncounted:
		return nil
	case r.Local:
		return sh.local.Settle(ctx, key, p, r, used)
	}
	delta := min(max(used, 0), maxTokens) - r.Tokens
	if delta == 0 {
		return nil
	}
	if sh.down.Load() {
		return fmt.Errorf("%w: redis is failing; %d tokens not settled", ErrUnavailable, delta)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sh.timeout)
	defer cancel()
	vals, err := settleScript.Run(ctx, sh.client, []string{TokensRedisKey(sh.prefix, key)},
		delta, r.Day, r.Minute, modelField(p), maxTokenModels).Int64Slice()
	if err == nil && len(vals) != 2 && len(vals) != 8 {
		err = fmt.Errorf("redis script answered %d values, want 2 or 8", len(vals))
	}
	if err != nil {
		sh.failed(err)
		return fmt.Errorf("%w: settling %d tokens: %w", ErrUnavailable, delta, err)
	}
	sh.failures.Store(0)
	if len(vals) == 8 && vals[0] == 1 {
		sh.local.mirrorTokens(key, p, tokenView{dayStart: vals[2], dayEnd: vals[3], dayUsed: vals[4],
			minute: vals[5], minuteUsed: vals[6], modelUsed: vals[7]})
	}
	return nil
}

// reserveTokens makes the one round trip of a reservation.
func (sh *sharedRedis) reserveTokens(ctx context.Context, key string, p TokenPolicy, n int64, local time.Time, peekOnly bool) (TokenResult, tokenView, error) {
	ctx, cancel := context.WithTimeout(ctx, sh.timeout)
	defer cancel()
	peekArg := "0"
	if peekOnly {
		peekArg = "1"
	}
	args := make([]any, 0, 13)
	args = append(args, n, p.Daily, p.PerMinute, p.ModelDaily, modelField(p), peekArg, maxTokenModels)
	for _, day := range []time.Time{local.AddDate(0, 0, -1), local, local.AddDate(0, 0, 1)} {
		start, end := p.Window.Bounds(day)
		args = append(args, start.Unix(), end.Unix())
	}
	vals, err := reserveScript.Run(ctx, sh.client, []string{TokensRedisKey(sh.prefix, key)}, args...).Int64Slice()
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
