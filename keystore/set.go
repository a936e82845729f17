package keystore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Source looks keys up by digest. Lookup returns a zero Match and a nil
// error for an unknown key; an error means the source could not answer,
// which must never be reported to a client as an invalid key.
type Source interface {
	Lookup(ctx context.Context, d Digest) (Match, error)
}

// ClientLookup is a Source whose misses cost a call to a remote service; it
// bounds the calls one client may have waiting, so one client cannot take
// every call slot from the others.
type ClientLookup interface {
	Source
	// LookupFor is Lookup on behalf of client (an address, or an IPv6
	// /64). It returns ErrClientBusy when client already waits on as many
	// calls as it may.
	LookupFor(ctx context.Context, d Digest, client netip.Prefix) (Match, error)
}

// ErrUnavailable wraps every failure of a remote source: the key could not
// be checked, which is not the same as the key being invalid.
var ErrUnavailable = errors.New("key source unavailable")

// ErrClientBusy refuses a lookup whose client already waits on as many
// calls to the source as it may. It is the client's doing, not the
// source's: not an ErrUnavailable.
var ErrClientBusy = errors.New("too many key checks in flight for this client")

// Match is the result of a lookup.
type Match struct {
	// Key is the matched key, or nil when the digest is unknown.
	Key *Key
	// Previous is the rotated-out secret that matched, or nil when the
	// key's current secret matched.
	Previous *PreviousDigest
}

// MatchFor is the match of k for digest d: its current secret, or one of
// its old ones; ok is false when d is neither.
func MatchFor(k *Key, d Digest) (m Match, ok bool) {
	if k.Digest.Equal(d) {
		return Match{Key: k}, true
	}
	for i := range k.Previous {
		if k.Previous[i].Digest.Equal(d) {
			return Match{Key: k, Previous: &k.Previous[i]}, true
		}
	}
	return Match{}, false
}

// Set is an immutable set of keys indexed by every digest they answer to.
type Set struct {
	keys     []*Key
	byDigest map[Digest]entry

	sortOnce sync.Once
	byID     []*Key // keys in id order, made at the first listing
}

type entry struct {
	key      *Key
	previous int // index into key.Previous, or -1 for the current digest
}

// RecordError names the record a problem was found in.
type RecordError struct {
	Index int
	ID    string
	Err   error
}

func (e *RecordError) Error() string {
	if e.ID == "" {
		return fmt.Sprintf("keys[%d]: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("keys[%d] (id %q): %v", e.Index, e.ID, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// NewSet validates records and indexes them. Ids must be unique, and no two
// records may answer to the same digest.
func NewSet(records []Record) (*Set, error) {
	compiled, errs := compileAll(records)
	return indexKeys(compiled, func(i int) (string, error) { return records[i].ID, errs[i] })
}

// NewSetOfKeys indexes keys compiled from a version's records, in record
// order, with NewSet's rules (ids unique, no digest answering to two keys)
// and its errors, which name the record by its index. The keys may be
// shared with other sets, e.g. those of the previous version of a file its
// change left as they were: a Set never modifies its keys. The set keeps
// keys; the caller must not modify it.
func NewSetOfKeys(keys []*Key) (*Set, error) {
	for i, k := range keys {
		if k == nil {
			return nil, &RecordError{Index: i, Err: errors.New("no key")}
		}
	}
	return indexKeys(keys, nil)
}

// indexKeys indexes keys in order; compiled, when not nil, gives the id
// and the compile error of each record (a nil key).
func indexKeys(keys []*Key, compiled func(i int) (string, error)) (*Set, error) {
	s := &Set{keys: keys, byDigest: make(map[Digest]entry, len(keys))}
	ids := make(map[string]int, len(keys))
	for i, k := range keys {
		if compiled != nil {
			if id, err := compiled(i); err != nil {
				return nil, &RecordError{Index: i, ID: id, Err: err}
			}
		}
		if first, dup := ids[k.ID]; dup {
			return nil, &RecordError{Index: i, ID: k.ID, Err: fieldErr("id", "duplicates keys[%d]", first)}
		}
		ids[k.ID] = i
		if err := s.index(k, k.Digest, -1, "hash", ids); err != nil {
			return nil, &RecordError{Index: i, ID: k.ID, Err: err}
		}
		for j, p := range k.Previous {
			if err := s.index(k, p.Digest, j, fmt.Sprintf("previous_hashes[%d].hash", j), ids); err != nil {
				return nil, &RecordError{Index: i, ID: k.ID, Err: err}
			}
		}
	}
	return s, nil
}

func (s *Set) index(k *Key, d Digest, previous int, field string, ids map[string]int) error {
	if other, dup := s.byDigest[d]; dup {
		return fieldErr(field, "the same hash is already used by keys[%d] (id %q)", ids[other.key.ID], other.key.ID)
	}
	s.byDigest[d] = entry{key: k, previous: previous}
	return nil
}

// Lookup finds the key that answers to d.
func (s *Set) Lookup(d Digest) Match {
	e, ok := s.byDigest[d]
	if !ok {
		return Match{}
	}
	// The map found the entry by the digest of what the client sent, so its
	// timing tells nothing about any stored key; the final comparison is
	// constant-time all the same.
	if e.previous < 0 {
		if !e.key.Digest.Equal(d) {
			return Match{}
		}
		return Match{Key: e.key}
	}
	p := &e.key.Previous[e.previous]
	if !p.Digest.Equal(d) {
		return Match{}
	}
	return Match{Key: e.key, Previous: p}
}

// Keys returns the keys in record order. The caller must not modify them.
func (s *Set) Keys() []*Key { return s.keys }

// Len returns the number of keys.
func (s *Set) Len() int { return len(s.keys) }

// Page lists the set's keys in id order, a page at a time, as a Store's
// List does, without copying records: for sources that hold their keys in
// memory. The id order is worked out once per set.
func (s *Set) Page(q ListQuery) ([]*Key, string) {
	s.sortOnce.Do(func() {
		s.byID = slices.Clone(s.keys)
		slices.SortFunc(s.byID, func(a, b *Key) int { return strings.Compare(a.ID, b.ID) })
	})
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	i := 0
	if q.After != "" {
		i = sort.Search(len(s.byID), func(i int) bool { return s.byID[i].ID > q.After })
	}
	var page []*Key
	for ; i < len(s.byID); i++ {
		k := s.byID[i]
		if q.Owner != "" && k.Owner != q.Owner {
			continue
		}
		if q.Team != "" && k.Team != q.Team {
			continue
		}
		if len(page) == limit {
			return page, page[limit-1].ID
		}
		page = append(page, k)
	}
	return page, ""
}

// KeyLister is a Source that lists its keys from memory (see Set.Page).
type KeyLister interface {
	ListKeys(q ListQuery) ([]*Key, string)
}

// compileAll compiles records on every core for a large set: checking a
// million-key file is mostly this.
func compileAll(records []Record) ([]*Key, []error) {
	keys := make([]*Key, len(records))
	errs := make([]error, len(records))
	workers := runtime.GOMAXPROCS(0)
	if len(records) < 10000 || workers < 2 {
		for i, rec := range records {
			keys[i], errs[i] = Compile(rec)
		}
		return keys, errs
	}
	var wg sync.WaitGroup
	chunk := (len(records) + workers - 1) / workers
	for start := 0; start < len(records); start += chunk {
		end := min(start+chunk, len(records))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := start; i < end; i++ {
				keys[i], errs[i] = Compile(records[i])
			}
		}()
	}
	wg.Wait()
	return keys, errs
}
