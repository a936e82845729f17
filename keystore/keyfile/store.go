package keyfile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Store is the key file as a keystore.Store: every change takes the file's
// lock, is checked, and is written atomically, keeping the fields and the
// order of what it does not touch.
type Store struct {
	// Path of the key file.
	Path string

	// read keeps the records last read, for listings and gets while the
	// file is unchanged; nil reads the file each time.
	read *readCache
}

// readCache is the file's records, sorted by id, as read at stamp.
type readCache struct {
	mu      sync.Mutex
	stamp   fileStamp
	records []keystore.Record
}

// NewStore returns the store of the key file at path. It keeps the records
// it last read while the file's stamp (size, modification and change
// times, identity: as the file's watcher compares them) is unchanged, so
// paging through a large file reads it once.
func NewStore(path string) *Store { return &Store{Path: path, read: &readCache{}} }

// Identity is the file's path: two stores of one file change the same
// records.
func (s *Store) Identity() any { return Store{Path: s.Path} }

// Describe names the store: the file's path.
func (s *Store) Describe() string { return s.Path }

// Close does nothing: the store holds nothing open between changes.
func (s *Store) Close() error { return nil }

// Create adds rec to the file.
func (s *Store) Create(_ context.Context, rec keystore.Record) error {
	if _, err := keystore.Compile(rec); err != nil {
		return fmt.Errorf("the new record is invalid: %w", err)
	}
	return EditKeyFile(s.Path, func(kf *KeyFile) error {
		if kf.Find(rec.ID) != nil {
			return fmt.Errorf("%w: %q is in %s", keystore.ErrIDTaken, rec.ID, s.Path)
		}
		if taken, err := kf.answersTo(rec); err != nil || taken != "" {
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: key %q", keystore.ErrHashTaken, taken)
		}
		return kf.Add(rec)
	})
}

// Update changes the record with id in the file.
func (s *Store) Update(ctx context.Context, id string, change func(*keystore.Record) error) (keystore.Record, error) {
	var written keystore.Record
	err := EditKeyFile(s.Path, func(kf *KeyFile) error {
		r := kf.Find(id)
		if r == nil {
			if _, err := os.Stat(s.Path); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: %w", keystore.ErrUnknownID, missingFile(s.Path))
			}
			return fmt.Errorf("%w: %q is not in %s", keystore.ErrUnknownID, id, s.Path)
		}
		before, err := r.Decode()
		if err != nil {
			return err
		}
		after := before
		after.Services = append([]string(nil), before.Services...)
		after.Permissions = append([]string(nil), before.Permissions...)
		after.AllowedIPs = append([]string(nil), before.AllowedIPs...)
		after.PreviousHashes = append([]keystore.PreviousHash(nil), before.PreviousHashes...)
		if err := change(&after); err != nil {
			return err
		}
		if after.ID != id {
			return errors.New("a key's id cannot change")
		}
		if err := keystore.CheckUnrevoke(ctx, before, after); err != nil {
			return err
		}
		if err := r.setChanged(before, after); err != nil {
			return err
		}
		written = after
		return nil
	})
	return written, err
}

// Get returns the record with id.
func (s *Store) Get(_ context.Context, id string) (keystore.Record, error) {
	records, err := s.sorted()
	if err != nil {
		return keystore.Record{}, err
	}
	if i, ok := slices.BinarySearchFunc(records, id, func(r keystore.Record, id string) int { return strings.Compare(r.ID, id) }); ok {
		return clone(records[i]), nil
	}
	return keystore.Record{}, fmt.Errorf("%w: %q is not in %s", keystore.ErrUnknownID, id, s.Path)
}

// List returns a page of the file's records, in id order.
func (s *Store) List(_ context.Context, q keystore.ListQuery) (keystore.Page, error) {
	records, err := s.sorted()
	if err != nil {
		return keystore.Page{}, err
	}
	page := keystore.PageOf(records, q)
	for i := range page.Records {
		page.Records[i] = clone(page.Records[i])
	}
	return page, nil
}

// sorted are the file's records by id: those read before while the file is
// unchanged, shared (callers get clones).
func (s *Store) sorted() ([]keystore.Record, error) {
	if s.read == nil {
		return s.readSorted()
	}
	c := s.read
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp, err := stampOf(s.Path)
	if err == nil && c.records != nil && stamp.same(c.stamp) {
		return c.records, nil
	}
	// The stamp is taken before the read: a change made in between shows
	// as a new stamp next time, and the file is read again.
	records, rerr := s.readSorted()
	if rerr != nil || err != nil {
		c.records = nil
		return records, rerr
	}
	c.stamp, c.records = stamp, records
	return records, nil
}

func (s *Store) readSorted() ([]keystore.Record, error) {
	records, err := s.records()
	if err != nil {
		return nil, err
	}
	sort.Slice(records, func(i, j int) bool { return records[i].ID < records[j].ID })
	return records, nil
}

// clone is a copy of r sharing nothing with it.
func clone(r keystore.Record) keystore.Record {
	r.Services = slices.Clone(r.Services)
	r.Permissions = slices.Clone(r.Permissions)
	r.AllowedIPs = slices.Clone(r.AllowedIPs)
	r.Models = slices.Clone(r.Models)
	r.PreviousHashes = slices.Clone(r.PreviousHashes)
	r.ModelTokensPerDay = maps.Clone(r.ModelTokensPerDay)
	if g := r.PendingGrant; g != nil {
		c := *g
		c.Services, c.Permissions, c.AllowedIPs, c.Models = slices.Clone(g.Services), slices.Clone(g.Permissions),
			slices.Clone(g.AllowedIPs), slices.Clone(g.Models)
		for _, p := range []**int64{&c.QuotaPerDay, &c.TokensPerDay, &c.TokensPerMinute} {
			if *p != nil {
				v := **p
				*p = &v
			}
		}
		r.PendingGrant = &c
	}
	if c := r.AdminChange; c != nil {
		change := *c
		r.AdminChange = &change
	}
	for _, p := range []**int64{&r.QuotaPerDay, &r.TokensPerDay, &r.TokensPerMinute} {
		if *p != nil {
			v := **p
			*p = &v
		}
	}
	return r
}

// records reads the file. A missing file is an error (a mistyped path must
// not list or export as an empty store); so is one over the cap.
func (s *Store) records() ([]keystore.Record, error) {
	data, err := ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missingFile(s.Path)
	}
	if err != nil {
		return nil, err
	}
	records, err := keystore.ParseRecords(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", s.Path, err)
	}
	return records, nil
}

// ErrNoFile is a key file that does not exist, where one must (a listing,
// an export, a change to a record).
var ErrNoFile = errors.New("key file does not exist")

func missingFile(path string) error {
	return fmt.Errorf("%w: %s (check the path; only caddy apikey new creates a key file)", ErrNoFile, path)
}

// answersTo returns the id of a record that answers to one of rec's
// hashes, or "": from the index of the first check, plus the records this
// change added.
func (kf *KeyFile) answersTo(rec keystore.Record) (string, error) {
	hashes := map[string]bool{rec.Hash: true}
	for _, p := range rec.PreviousHashes {
		hashes[p.Hash] = true
	}
	records := kf.Records
	if kf.set != nil {
		for h := range hashes {
			if d, err := keystore.ParseDigest(h); err == nil {
				if m := kf.set.Lookup(d); m.Key != nil {
					return m.Key.ID, nil
				}
			}
		}
		records = records[kf.set.Len():]
	}
	for _, r := range records {
		other, err := r.Decode()
		if err != nil {
			return "", err
		}
		if hashes[other.Hash] {
			return other.ID, nil
		}
		for _, p := range other.PreviousHashes {
			if hashes[p.Hash] {
				return other.ID, nil
			}
		}
	}
	return "", nil
}

// setChanged writes the fields in which after differs from before, in
// place, and removes those after leaves out; the others stay as they are,
// in their order.
func (r *RecordFields) setChanged(before, after keystore.Record) error {
	old, err := fieldsOf(before)
	if err != nil {
		return err
	}
	next, err := fieldsOf(after)
	if err != nil {
		return err
	}
	for _, f := range next {
		if prev, ok := lookupField(old, f.name); !ok || !bytes.Equal(prev, f.value) {
			r.setRaw(f.name, f.value)
		}
	}
	for _, f := range old {
		if _, ok := lookupField(next, f.name); !ok {
			r.remove(f.name)
		}
	}
	return nil
}

func fieldsOf(rec keystore.Record) ([]field, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	return parseObject(data)
}

func lookupField(fields []field, name string) (json.RawMessage, bool) {
	for _, f := range fields {
		if f.name == name {
			return f.value, true
		}
	}
	return nil, false
}

func (r *RecordFields) setRaw(name string, value json.RawMessage) {
	r.load()
	r.touched = true
	for i := range r.fields {
		if r.fields[i].name == name {
			r.fields[i].value = value
			return
		}
	}
	r.fields = append(r.fields, field{name: name, value: value})
}

func (r *RecordFields) remove(name string) {
	r.load()
	r.touched = true
	for i := range r.fields {
		if r.fields[i].name == name {
			r.fields = append(r.fields[:i], r.fields[i+1:]...)
			return
		}
	}
}

// Interface guard
var _ keystore.Store = (*Store)(nil)
