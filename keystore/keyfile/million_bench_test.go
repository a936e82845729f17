package keyfile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// BenchmarkLoadMillion loads a key file of 1,000,000 records (178 MB) and
// reports the heap each loaded record keeps. Slow to set up; run it alone:
//
//	go test -run '^$' -bench LoadMillion -benchtime 1x ./keystore/keyfile
func BenchmarkLoadMillion(b *testing.B) {
	path := millionKeyFile(b)
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		set, err := LoadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(set.Len()), "B/record")
		runtime.KeepAlive(set)
		b.StartTimer()
	}
}

// BenchmarkReloadMillion loads a new version of a key file of 1,000,000
// records in which one record changed, as the watcher does after `caddy
// apikey revoke`: the version in force lends the new one the keys of the
// records left as they were. It reports the heap the new version adds
// (its index; the keys are shared) and what the watcher keeps a record to
// tell records apart. Run it alone:
//
//	go test -run '^$' -bench ReloadMillion -benchtime 4x ./keystore/keyfile
func BenchmarkReloadMillion(b *testing.B) {
	path := millionKeyFile(b)
	prev, _, err := loadKeyFile(path, path, nil, true)
	if err != nil {
		b.Fatal(err)
	}
	s := NewStore(path)
	revoked := false
	for b.Loop() {
		b.StopTimer()
		revoked = !revoked
		if _, err := s.Update(context.Background(), "k_0500000", func(r *keystore.Record) error {
			r.Revoked = revoked
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		next, _, err := loadKeyFile(path, path, prev, true)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(next.set.Len()), "added-B/record")
		b.ReportMetric(float64(8*cap(next.sums))/float64(next.set.Len()), "fingerprint-B/record")
		if next.set.Keys()[0] != prev.set.Keys()[0] || next.set.Keys()[500000].Revoked != revoked {
			b.Fatal("the keys were not reused, or the change was missed")
		}
		prev = next
		b.StartTimer()
	}
}

// BenchmarkEditMillion changes one record of a key file of 1,000,000
// records through the store, as `caddy apikey revoke` does: lock, read,
// check, change, check the change, write. Run it alone:
//
//	go test -run '^$' -bench EditMillion -benchtime 2x ./keystore/keyfile
func BenchmarkEditMillion(b *testing.B) {
	s := NewStore(millionKeyFile(b))
	revoked := false
	b.ResetTimer()
	for b.Loop() {
		revoked = !revoked
		if _, err := s.Update(context.Background(), "k_0500000", func(r *keystore.Record) error {
			r.Revoked = revoked
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// millionKeyFile writes a key file of 1,000,000 records of the shape
// `caddy apikey new` writes (178 MB) and returns its path.
func millionKeyFile(b *testing.B) string {
	b.Helper()
	records := make([]keystore.Record, 1000000)
	for i := range records {
		k, _ := keystore.Generate(keystore.Dev)
		records[i] = keystore.Record{ID: fmt.Sprintf("k_%07d", i), Hash: keystore.Sum(k).Encode(), Type: "dev",
			Role: "reader", Services: []string{"ollama"}, CreatedAt: "2026-11-27T00:00:00Z"}
	}
	data, err := json.Marshal(map[string]any{"keys": records})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}
