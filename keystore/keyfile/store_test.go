package keyfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/storetest"
)

func TestStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return NewStore(filepath.Join(t.TempDir(), "keys.json"))
	})
}

// TestLargeFileChecksWhatChanged: past checkWholeUpTo records a change is
// checked against the index of the first check rather than by reading the
// whole file again; the same changes are refused, and what passes loads.
func TestLargeFileChecksWhatChanged(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.json")
	var records []keystore.Record
	for i := range checkWholeUpTo + 5 {
		records = append(records, newRecord(t, fmt.Sprintf("k_%05d", i)))
	}
	data, _ := json.Marshal(map[string]any{"keys": records})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewStore(path)
	before, _ := os.ReadFile(path)
	dupHash := newRecord(t, "k_new")
	dupHash.Hash = records[42].Hash
	if err := s.Create(ctx, dupHash); !errors.Is(err, keystore.ErrHashTaken) {
		t.Errorf("another key's hash: %v", err)
	}
	if _, err := s.Update(ctx, "k_00007", func(r *keystore.Record) error {
		r.PreviousHashes = []keystore.PreviousHash{{Hash: records[9].Hash, ValidUntil: "2099-01-01T00:00:00Z"}}
		return nil
	}); err == nil {
		t.Error("an update took another key's hash as an old secret")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("a refused change wrote the file")
	}
	if err := s.Create(ctx, newRecord(t, "k_new")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "k_00003", func(r *keystore.Record) error { r.Revoked = true; return nil }); err != nil {
		t.Fatal(err)
	}
	set, err := LoadFile(path)
	if err != nil {
		t.Fatalf("the changed file does not load: %v", err)
	}
	if set.Len() != checkWholeUpTo+6 {
		t.Errorf("%d keys", set.Len())
	}
	for _, k := range set.Keys() {
		if k.ID == "k_00003" && !k.Revoked {
			t.Error("the revocation is not in the file")
		}
	}
}

func newRecord(t *testing.T, id string) keystore.Record {
	t.Helper()
	key, err := keystore.Generate(keystore.Dev)
	if err != nil {
		t.Fatal(err)
	}
	return keystore.Record{ID: id, Hash: keystore.Sum(key).Encode(), Type: "dev", Role: "reader"}
}
