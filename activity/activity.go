// Package activity keeps, per key and on this instance, what the usage
// counters do not: the key's refusals counted by reason, its requests and
// tokens per model, and a log of its last requests. Everything is bounded:
// MaxKeys keys, LogSize log entries and MaxModels models per key, and a
// fixed set of reasons. Recording a request takes one of 16 locks, chosen
// by key id, and allocates only when a key or a model is first seen (or a
// key's log grows towards LogSize).
package activity

import (
	"hash/maphash"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds.
const (
	// MaxKeys is how many keys are tracked; past it, the key seen least
	// recently in the new key's shard is forgotten (counted in Evicted).
	MaxKeys = 4096
	// LogSize is how many of a key's requests its log keeps, the last ones.
	LogSize = 100
	// MaxModels is how many models are counted per key; the requests and
	// tokens of the others are counted under OtherModel.
	MaxModels = 20
	// MaxPath is how many bytes of a request's path the log keeps; a
	// longer path is cut and ends in "…".
	MaxPath = 64
	// MaxModelName is how many bytes of a model's name are kept.
	MaxModelName = 64
	// MaxExpiryNotices is how many keys' expiry notices are remembered,
	// so that each key's owner is told once per expiry whether a request
	// or the portal's sweep noticed it first; a notice of an expiry that
	// has passed is forgotten first. Past it, further keys are not told
	// (counted in Unnoticed).
	MaxExpiryNotices = 100_000

	// OtherModel counts the models past MaxModels.
	OtherModel = ":other"
)

// Reasons is every reason a refusal of a known key is counted under, in
// the order pages show them. A refusal's reason is its reason field, or,
// where it has none, its error code; anything else counts as "other".
var Reasons = [...]string{
	"revoked_key", "expired_key", "paused", "pending_approval", "key_type", "ip", "service", "path",
	"method", "model", "body", "body_too_large", "inflight_body", "burst", "quota_exceeded",
	"tokens_daily", "tokens_minute", "tokens_model", "unavailable", "other",
}

const numReasons = len(Reasons)

// reasonIndex is the place of reason in Reasons, without a map or an
// allocation: the reasons are a fixed set.
func reasonIndex(reason string) uint8 {
	for i, r := range Reasons[:numReasons-1] {
		if r == reason {
			return uint8(i)
		}
	}
	return uint8(numReasons - 1)
}

var methods = [...]string{"", http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace, "OTHER"}

func methodIndex(m string) uint8 {
	for i, s := range methods[1 : len(methods)-1] {
		if s == m {
			return uint8(i + 1)
		}
	}
	return uint8(len(methods) - 1)
}

// entry is one request in a key's log: small and fixed in size, so that
// the log is a ring of values.
type entry struct {
	at      int64 // Unix nanoseconds
	tokens  int64
	status  uint16
	method  uint8
	reason  uint8 // 0: none; else 1 + its place in Reasons
	pathLen uint8
	cut     bool
	path    [MaxPath]byte
}

type modelCount struct {
	name     string
	requests int64
	tokens   int64
}

// keyActivity is what is kept of one key.
type keyActivity struct {
	first, last int64 // Unix nanoseconds
	refusals    [numReasons]int64
	statuses    [numReasons]uint16 // the status each reason was answered with last
	models      []modelCount       // at most MaxModels, then OtherModel
	log         []entry            // a ring once LogSize long
	next        int                // where the next entry goes, once the ring is full
}

const shards = 16

// Tracker keeps the activity of keys. The zero Tracker is not ready: use
// New.
type Tracker struct {
	seed   maphash.Seed
	keys   atomic.Int64
	shards [shards]shard
	// Evicted counts the keys forgotten to make room for others.
	Evicted atomic.Uint64
	// Untracked counts the requests not recorded: MaxKeys keys were
	// tracked, none of them in the shard of the request's key.
	Untracked atomic.Uint64
	// Unnoticed counts the expiry notices not published because
	// MaxExpiryNotices notices of expiries still to come were remembered.
	Unnoticed atomic.Uint64

	listenersMu sync.Mutex                  // changes listeners
	listeners   atomic.Pointer[[]*listener] // read without the lock
}

type shard struct {
	mu sync.Mutex
	m  map[string]*keyActivity
	// noticed is the expiry (Unix s) each key's owner was told of, at
	// most MaxExpiryNotices/shards; noticedMin is the earliest of them
	// (or earlier), before which none has passed.
	noticed    map[string]int64
	noticedMin int64
}

// New returns an empty tracker.
func New() *Tracker {
	t := &Tracker{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[string]*keyActivity{}
		t.shards[i].noticed = map[string]int64{}
	}
	return t
}

// Destruct does nothing: a tracker holds memory only. It lets the apikey
// app share one tracker a store between the routes, portals and leak
// endpoints of a config, and across a reload (caddy.UsagePool).
func (*Tracker) Destruct() error { return nil }

// Request is one request of a known key, as it ended.
type Request struct {
	KeyID  string
	At     time.Time
	Method string
	// Path is the request's path, without its query.
	Path   string
	Status int
	// Reason is why it was refused; "" for an admitted request.
	Reason string
	// Model is the model it asked for, on a route with tokens; "" else.
	Model string
	// Tokens is what its answer used (prompt and completion).
	Tokens int64
	// Expires is when the key expires; zero for never. A key used within
	// ExpiryNotice of it is published as "key.expiring", once per expiry
	// (see NoticeExpiry).
	Expires time.Time
}

// ExpiryNotice is how long before its expiry a key's owner is told.
const ExpiryNotice = 14 * 24 * time.Hour

// NoticeExpiry publishes "key.expiring" for the key when, at now, it
// expires within ExpiryNotice, its owner was not told of this expiry yet
// (by a request of the key or an earlier call) and something listens; it
// reports whether it did. The portal calls it for the keys nobody uses
// (its sweep); a request of the key calls it through Record.
func (t *Tracker) NoticeExpiry(keyID string, expires, now time.Time) bool {
	if t == nil {
		return false
	}
	sh := &t.shards[maphash.String(t.seed, keyID)%shards]
	sh.mu.Lock()
	expiring := t.noticeLocked(sh, keyID, expires, now)
	sh.mu.Unlock()
	if expiring {
		t.Publish(KeyEvent{KeyID: keyID, Event: "key.expiring", Reset: expires, At: now})
	}
	return expiring
}

// noticeLocked is NoticeExpiry's decision, under the shard's lock: it
// remembers the expiry it reports.
func (t *Tracker) noticeLocked(sh *shard, keyID string, expires, now time.Time) bool {
	if expires.IsZero() || !expires.After(now) || expires.Sub(now) > ExpiryNotice || !t.Listening() {
		return false
	}
	exp := expires.Unix()
	if old, ok := sh.noticed[keyID]; ok {
		if old == exp {
			return false
		}
		sh.noticed[keyID] = exp // a new expiry: extended, or renewed
		sh.noticedMin = min(sh.noticedMin, exp)
		return true
	}
	if len(sh.noticed) >= MaxExpiryNotices/shards {
		// Forget the expiries passed, if any has.
		if nowS := now.Unix(); sh.noticedMin < nowS {
			sh.noticedMin = exp
			for id, e := range sh.noticed {
				if e < nowS {
					delete(sh.noticed, id)
				} else {
					sh.noticedMin = min(sh.noticedMin, e)
				}
			}
		}
		if len(sh.noticed) >= MaxExpiryNotices/shards {
			t.Unnoticed.Add(1)
			return false
		}
	}
	if len(sh.noticed) == 0 {
		sh.noticedMin = exp
	}
	sh.noticed[strings.Clone(keyID)] = exp
	sh.noticedMin = min(sh.noticedMin, exp)
	return true
}

// Record adds a request to its key's activity: to the refusals by reason
// when it was refused, to its model's counts when it names one, and to the
// log.
func (t *Tracker) Record(q Request) {
	if t == nil {
		return
	}
	if t.record(q) {
		t.Publish(KeyEvent{KeyID: q.KeyID, Event: "key.expiring", Reset: q.Expires, At: q.At})
	}
}

// record is Record under the shard's lock; it reports whether the key's
// coming expiry is to be published.
func (t *Tracker) record(q Request) (expiring bool) {
	sh := &t.shards[maphash.String(t.seed, q.KeyID)%shards]
	now := q.At.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	expiring = t.noticeLocked(sh, q.KeyID, q.Expires, q.At)
	a := sh.m[q.KeyID]
	if a == nil {
		if t.keys.Load() >= MaxKeys {
			if !sh.evictOldest() {
				t.Untracked.Add(1) // this shard holds no key to forget
				return
			}
			t.Evicted.Add(1)
			t.keys.Add(-1)
		}
		a = &keyActivity{first: now}
		sh.m[strings.Clone(q.KeyID)] = a
		t.keys.Add(1)
	}
	a.last = now
	e := entry{at: now, tokens: max(q.Tokens, 0), status: uint16(q.Status), method: methodIndex(q.Method)}
	if q.Reason != "" {
		i := reasonIndex(q.Reason)
		a.refusals[i]++
		a.statuses[i] = uint16(q.Status)
		e.reason = i + 1
	} else if q.Model != "" {
		m := a.model(q.Model)
		m.requests++
		m.tokens += e.tokens
	}
	p := q.Path
	if len(p) > MaxPath {
		p, e.cut = p[:MaxPath-3], true
	}
	e.pathLen = uint8(copy(e.path[:], p))
	if len(a.log) < LogSize {
		a.log = append(a.log, e)
	} else {
		a.log[a.next] = e
		a.next = (a.next + 1) % LogSize
	}
	return expiring
}

// evictOldest forgets the key of the shard seen least recently; false when
// the shard holds none.
func (sh *shard) evictOldest() bool {
	var oldest string
	var at int64
	found := false
	for id, a := range sh.m {
		if !found || a.last < at {
			oldest, at, found = id, a.last, true
		}
	}
	if found {
		delete(sh.m, oldest)
	}
	return found
}

// model is the count of a model, opened within MaxModels, or OtherModel's.
func (a *keyActivity) model(name string) *modelCount {
	if len(name) > MaxModelName {
		name = name[:MaxModelName]
	}
	for i := range a.models {
		if a.models[i].name == name {
			return &a.models[i]
		}
	}
	if len(a.models) >= MaxModels {
		// The last one, past MaxModels, is OtherModel's.
		if len(a.models) == MaxModels {
			a.models = append(a.models, modelCount{name: OtherModel})
		}
		return &a.models[MaxModels]
	}
	a.models = append(a.models, modelCount{name: strings.Clone(name)})
	return &a.models[len(a.models)-1]
}

// Refusal is a reason's count.
type Refusal struct {
	Reason string
	// Status is what the reason was last answered with.
	Status int
	Count  int64
}

// Model is a model's count.
type Model struct {
	Name     string
	Requests int64
	Tokens   int64
}

// LogLine is one request of a key's log.
type LogLine struct {
	Time   time.Time
	Method string
	Path   string
	Status int
	Reason string
	Tokens int64
}

// Snapshot is a key's activity, copied.
type Snapshot struct {
	// Since is when the key was first seen by this instance (since it
	// started, or since the key was last forgotten).
	Since    time.Time
	Refusals []Refusal // the reasons counted, most first
	Models   []Model   // most requests first
	Log      []LogLine // newest first
}

// Of returns the key's activity; ok is false when none was recorded.
func (t *Tracker) Of(keyID string) (s Snapshot, ok bool) {
	sh := &t.shards[maphash.String(t.seed, keyID)%shards]
	sh.mu.Lock()
	a := sh.m[keyID]
	if a == nil {
		sh.mu.Unlock()
		return Snapshot{}, false
	}
	s.Since = time.Unix(0, a.first).UTC()
	for i, n := range a.refusals {
		if n > 0 {
			s.Refusals = append(s.Refusals, Refusal{Reason: Reasons[i], Status: int(a.statuses[i]), Count: n})
		}
	}
	for _, m := range a.models {
		s.Models = append(s.Models, Model{Name: m.name, Requests: m.requests, Tokens: m.tokens})
	}
	s.Log = make([]LogLine, 0, len(a.log))
	for i := range a.log {
		// Newest first: the one before next, going back.
		e := &a.log[(a.next-1-i+2*len(a.log))%len(a.log)]
		line := LogLine{Time: time.Unix(0, e.at).UTC(), Method: methods[e.method], Path: string(e.path[:e.pathLen]),
			Status: int(e.status), Tokens: e.tokens}
		if e.cut {
			line.Path += "…"
		}
		if e.reason > 0 {
			line.Reason = Reasons[e.reason-1]
		}
		s.Log = append(s.Log, line)
	}
	sh.mu.Unlock()
	sort.SliceStable(s.Refusals, func(i, j int) bool { return s.Refusals[i].Count > s.Refusals[j].Count })
	sort.SliceStable(s.Models, func(i, j int) bool { return s.Models[i].Requests > s.Models[j].Requests })
	return s, true
}

// Len is the number of keys tracked.
func (t *Tracker) Len() int { return int(t.keys.Load()) }
