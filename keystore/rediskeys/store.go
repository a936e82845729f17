// Package rediskeys keeps key records in Redis: the store that the
// commands, the admin API and the portal change, and the "redis" key source
// that every gateway instance reads, behind a cache that each change
// invalidates on every instance.
package rediskeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// DefaultKeyPrefix starts every Redis key the store writes.
const DefaultKeyPrefix = "apikey:"

// Layout, under <prefix>{keys}: (one hash tag, so that every script touches
// one Cluster slot):
//
//	rec:<id>        the record, as JSON
//	hash:<hex>      the id of the record that answers to this SHA-256 (its
//	                current secret or an old one in rotation grace)
//	ids             every id, a sorted set read by lexical range
//	owner:<owner>   the ids of one owner, the same way
//	team:<team>     the ids of one team's keys (Record.Team), the same way
//	waiting         the ids of the records waiting for approval
//	                (Record.Waiting), the same way; waiting-indexed is set
//	                once the records written before this index existed are
//	                in it
//	changes         the channel each change publishes the id on
//
// A record and its indexes change in one Lua script, so they never disagree,
// even when the writer dies halfway.
func layout(prefix string) string { return prefix + "{keys}:" }

// Store is a keystore.Store on Redis.
type Store struct {
	client redis.UniversalClient
	p      string // layout prefix
	name   string
	// database names the Redis database (see redisconn.Config.Database),
	// when known: what Identity compares.
	database string
}

// NewStore returns the store under keyPrefix ("" for DefaultKeyPrefix);
// describe names the Redis in messages.
func NewStore(client redis.UniversalClient, keyPrefix, describe string) *Store {
	if keyPrefix == "" {
		keyPrefix = DefaultKeyPrefix
	}
	return &Store{client: client, p: layout(keyPrefix), name: describe + " " + keyPrefix}
}

// Identity is the Redis database and the prefix the store reads: two
// stores with both equal change the same records, whatever user each
// connects as, and however long the addresses that Describe shortens. A
// store made by NewStore alone is known by its client and prefix.
func (s *Store) Identity() any {
	if s.database == "" {
		return *s
	}
	return storeIdentity{s.database, s.p}
}

type storeIdentity struct{ database, prefix string }

// Describe names the store: the Redis and the prefix, never a password.
func (s *Store) Describe() string { return s.name }

// Close does nothing: the client is shared and let go of by its owner.
func (s *Store) Close() error { return nil }

// Channel is where changes are published.
func (s *Store) Channel() string { return s.p + "changes" }

var createScript = redis.NewScript(`
local p, id, rec, owner, waiting, team = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', p .. 'rec:' .. id) == 1 then return {'id_taken'} end
for i = 7, #ARGV do
  local other = redis.call('GET', p .. 'hash:' .. ARGV[i])
  if other then return {'hash_taken', other} end
end
redis.call('SET', p .. 'rec:' .. id, rec)
for i = 7, #ARGV do redis.call('SET', p .. 'hash:' .. ARGV[i], id) end
redis.call('ZADD', KEYS[1], 0, id)
if owner ~= '' then redis.call('ZADD', p .. 'owner:' .. owner, 0, id) end
if team ~= '' then redis.call('ZADD', p .. 'team:' .. team, 0, id) end
if waiting == '1' then redis.call('ZADD', p .. 'waiting', 0, id) end
redis.call('PUBLISH', p .. 'changes', id)
return {'ok'}
`)

var updateScript = redis.NewScript(`
local p, id, old, new, oldOwner, newOwner, waiting = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local oldTeam, newTeam = ARGV[8], ARGV[9]
local nOld = tonumber(ARGV[10])
local cur = redis.call('GET', p .. 'rec:' .. id)
if not cur then return {'unknown'} end
if cur ~= old then return {'conflict'} end
local keep = {}
for i = 11 + nOld, #ARGV do
  keep[ARGV[i]] = true
  local other = redis.call('GET', p .. 'hash:' .. ARGV[i])
  if other and other ~= id then return {'hash_taken', other} end
end
for i = 11, 10 + nOld do
  if not keep[ARGV[i]] then redis.call('DEL', p .. 'hash:' .. ARGV[i]) end
end
for i = 11 + nOld, #ARGV do redis.call('SET', p .. 'hash:' .. ARGV[i], id) end
redis.call('SET', p .. 'rec:' .. id, new)
if oldOwner ~= newOwner then
  if oldOwner ~= '' then redis.call('ZREM', p .. 'owner:' .. oldOwner, id) end
  if newOwner ~= '' then redis.call('ZADD', p .. 'owner:' .. newOwner, 0, id) end
end
if oldTeam ~= newTeam then
  if oldTeam ~= '' then redis.call('ZREM', p .. 'team:' .. oldTeam, id) end
  if newTeam ~= '' then redis.call('ZADD', p .. 'team:' .. newTeam, 0, id) end
end
if waiting == '1' then redis.call('ZADD', p .. 'waiting', 0, id) else redis.call('ZREM', p .. 'waiting', id) end
redis.call('PUBLISH', p .. 'changes', id)
return {'ok'}
`)

var lookupScript = redis.NewScript(`
local id = redis.call('GET', KEYS[1])
if not id then return false end
local rec = redis.call('GET', ARGV[1] .. 'rec:' .. id)
if not rec then return {id} end
return {id, rec}
`)

// hashesOf are the hex digests a record answers to.
func hashesOf(rec keystore.Record) ([]any, error) {
	var out []any
	for _, h := range append([]string{rec.Hash}, previousHashes(rec)...) {
		d, err := keystore.ParseDigest(h)
		if err != nil {
			return nil, err
		}
		out = append(out, d.Hex())
	}
	return out, nil
}

func previousHashes(rec keystore.Record) []string {
	out := make([]string, len(rec.PreviousHashes))
	for i, p := range rec.PreviousHashes {
		out[i] = p.Hash
	}
	return out
}

// outcome reads a script's answer.
func outcome(res any, err error, id string) error {
	if err != nil {
		return fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	parts, _ := res.([]any)
	if len(parts) == 0 {
		return errors.New("redis: unexpected answer")
	}
	switch parts[0] {
	case "ok":
		return nil
	case "id_taken":
		return fmt.Errorf("%w: %q", keystore.ErrIDTaken, id)
	case "unknown":
		return fmt.Errorf("%w: %q", keystore.ErrUnknownID, id)
	case "conflict":
		return errConflict
	case "hash_taken":
		other := ""
		if len(parts) > 1 {
			other, _ = parts[1].(string)
		}
		return fmt.Errorf("%w: key %q", keystore.ErrHashTaken, other)
	}
	return fmt.Errorf("redis: unexpected answer %v", parts[0])
}

// errConflict: the record changed between the read and the write.
var errConflict = errors.New("the record changed while it was being updated")

// Create adds rec, with its indexes, in one script.
func (s *Store) Create(ctx context.Context, rec keystore.Record) error {
	if _, err := keystore.Compile(rec); err != nil {
		return fmt.Errorf("the new record is invalid: %w", err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	hashes, err := hashesOf(rec)
	if err != nil {
		return err
	}
	args := append([]any{s.p, rec.ID, data, rec.Owner, flag(rec.Waiting()), rec.Team}, hashes...)
	res, err := createScript.Run(ctx, s.client, []string{s.p + "ids"}, args...).Result()
	return outcome(res, err, rec.ID)
}

// maxUpdateTries bounds the retries of an update that raced another.
const maxUpdateTries = 10

// Update reads the record, applies change, and writes it back only if
// nobody changed it in between (compare and set, in one script); it tries
// again when somebody did.
func (s *Store) Update(ctx context.Context, id string, change func(*keystore.Record) error) (keystore.Record, error) {
	for range maxUpdateTries {
		old, err := s.client.Get(ctx, s.p+"rec:"+id).Result()
		if errors.Is(err, redis.Nil) {
			return keystore.Record{}, fmt.Errorf("%w: %q", keystore.ErrUnknownID, id)
		}
		if err != nil {
			return keystore.Record{}, fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
		}
		before, _, err := decodeStored(id, old)
		if err != nil {
			return keystore.Record{}, err
		}
		after, _ := decodeRecord(id, []byte(old)) // a copy, slices included
		if err := change(&after); err != nil {
			return keystore.Record{}, err
		}
		if after.ID != id {
			return keystore.Record{}, errors.New("a key's id cannot change")
		}
		if err := keystore.CheckUnrevoke(ctx, before, after); err != nil {
			return keystore.Record{}, err
		}
		if _, err := keystore.Compile(after); err != nil {
			return keystore.Record{}, fmt.Errorf("the change would make key %q invalid, so it was not written: %w", id, err)
		}
		data, err := json.Marshal(after)
		if err != nil {
			return keystore.Record{}, err
		}
		oldHashes, err := hashesOf(before)
		if err != nil {
			return keystore.Record{}, err
		}
		newHashes, err := hashesOf(after)
		if err != nil {
			return keystore.Record{}, err
		}
		args := append([]any{s.p, id, old, data, before.Owner, after.Owner, flag(after.Waiting()), before.Team, after.Team, len(oldHashes)}, oldHashes...)
		args = append(args, newHashes...)
		res, err := updateScript.Run(ctx, s.client, []string{s.p + "ids"}, args...).Result()
		if err := outcome(res, err, id); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return keystore.Record{}, err
		}
		return after, nil
	}
	return keystore.Record{}, fmt.Errorf("key %q: %w, %d times; try again", id, errConflict, maxUpdateTries)
}

// Get returns the record with id.
func (s *Store) Get(ctx context.Context, id string) (keystore.Record, error) {
	data, err := s.client.Get(ctx, s.p+"rec:"+id).Result()
	if errors.Is(err, redis.Nil) {
		return keystore.Record{}, fmt.Errorf("%w: %q", keystore.ErrUnknownID, id)
	}
	if err != nil {
		return keystore.Record{}, fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	rec, _, err := decodeStored(id, data)
	return rec, err
}

// List returns a page of records in id order: one range read of the id
// index and one read of the records, whatever the store's size.
func (s *Store) List(ctx context.Context, q keystore.ListQuery) (keystore.Page, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = keystore.DefaultListLimit
	}
	limit = min(limit, keystore.MaxListLimit)
	index := s.p + "ids"
	switch {
	case q.Waiting:
		if err := s.indexWaiting(ctx); err != nil {
			return keystore.Page{}, err
		}
		index = s.p + "waiting"
	case q.Team != "":
		index = s.p + "team:" + q.Team
	case q.Owner != "":
		index = s.p + "owner:" + q.Owner
	}
	from := "-"
	if q.After != "" {
		from = "(" + q.After
	}
	ids, err := s.client.ZRangeByLex(ctx, index, &redis.ZRangeBy{Min: from, Max: "+", Count: int64(limit + 1)}).Result()
	if err != nil {
		return keystore.Page{}, fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	var page keystore.Page
	if len(ids) > limit {
		ids = ids[:limit]
		page.Next = ids[limit-1]
	}
	if len(ids) == 0 {
		return page, nil
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = s.p + "rec:" + id
	}
	vals, err := s.client.MGet(ctx, names...).Result()
	if err != nil {
		return keystore.Page{}, fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	for i, v := range vals {
		data, ok := v.(string)
		if !ok {
			continue // removed between the two reads
		}
		rec, _, err := decodeStored(ids[i], data)
		if err != nil {
			continue // damaged by hand; Get names the problem, a listing goes on
		}
		if (q.Waiting && !rec.Waiting()) || (q.Owner != "" && rec.Owner != q.Owner) || (q.Team != "" && rec.Team != q.Team) {
			// The index may name a record approved while it was being
			// filled (see indexWaiting); an index serves one filter, and
			// the others are checked here.
			continue
		}
		page.Records = append(page.Records, rec)
	}
	return page, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// indexWaiting fills the index of waiting records with those written before
// it existed, once per store: every write keeps it from then on. A record
// approved while this runs may be left in it; List skips the records that
// no longer wait.
func (s *Store) indexWaiting(ctx context.Context) error {
	done, err := s.client.Exists(ctx, s.p+"waiting-indexed").Result()
	if err != nil {
		return fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	if done == 1 {
		return nil
	}
	q := keystore.ListQuery{Limit: keystore.MaxListLimit}
	for {
		page, err := s.List(ctx, q)
		if err != nil {
			return err
		}
		var ids []redis.Z
		for _, rec := range page.Records {
			if rec.Waiting() {
				ids = append(ids, redis.Z{Member: rec.ID})
			}
		}
		if len(ids) > 0 {
			if err := s.client.ZAdd(ctx, s.p+"waiting", ids...).Err(); err != nil {
				return fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
			}
		}
		if page.Next == "" {
			break
		}
		q.After = page.Next
	}
	if err := s.client.Set(ctx, s.p+"waiting-indexed", "1", 0).Err(); err != nil {
		return fmt.Errorf("%w: %v", keystore.ErrUnavailable, err)
	}
	return nil
}

// lookup finds the record that answers to d, in one round trip.
func (s *Store) lookup(ctx context.Context, d keystore.Digest) (keystore.Record, bool, error) {
	res, err := lookupScript.Run(ctx, s.client, []string{s.p + "hash:" + d.Hex()}, s.p).Result()
	if errors.Is(err, redis.Nil) {
		return keystore.Record{}, false, nil
	}
	if err != nil {
		return keystore.Record{}, false, err
	}
	parts, _ := res.([]any)
	if len(parts) == 0 {
		return keystore.Record{}, false, nil
	}
	id, _ := parts[0].(string)
	if len(parts) < 2 {
		// The hash index names a record that is gone: the store is not
		// what a writer leaves, so no answer can be trusted.
		return keystore.Record{}, false, fmt.Errorf("redis: the hash index names key %q, which has no record", id)
	}
	data, _ := parts[1].(string)
	return decodeStored(id, data)
}

// decodeStored reads the record stored under id; a record that does not
// parse, or whose own id is not the one it is stored under, is refused:
// admitting it would act under another key's name.
func decodeStored(id, data string) (keystore.Record, bool, error) {
	rec, err := decodeRecord(id, []byte(data))
	if err != nil {
		return keystore.Record{}, false, err
	}
	if rec.ID != id {
		return keystore.Record{}, false, fmt.Errorf("record %q in redis holds the id %q; fix or remove it", id, rec.ID)
	}
	return rec, true, nil
}

// Interface guard
var _ keystore.Store = (*Store)(nil)
