package keyfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestWatcherHashesOnASlowTick: where the system gives no change time, an
// edit in place that keeps the size and puts the modification time back
// shows in nothing the stat gives; the content hashed every hashEvery
// sees it, and between those ticks a settled file is not read.
func TestWatcherHashesOnASlowTick(t *testing.T) {
	defer func(use bool, every time.Duration) { useChangeTime, hashEvery = use, every }(useChangeTime, hashEvery)
	useChangeTime, hashEvery = false, 2*time.Second

	a, aHash := hashOf(t, keystore.Dev)
	path := filepath.Join(t.TempDir(), "keys.json")
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
	}
	first := `{"keys": [{"id": "k_one", "hash": "` + aHash + `", "role": "reader"}]}`
	second := `{"keys": [{"id": "k_one", "hash": "` + aHash + `", "role": "reader", "revoked": true}]}`
	write(first + strings.Repeat(" ", len(second)-len(first))) // the same size`)
	w, err := watchFile("keys.json", path)
	if err != nil {
		t.Fatal(err)
	}
	w.Destruct() // this test polls by hand, with w.check
	revoked := func() bool {
		m := w.set.Load().Lookup(keystore.Sum(a))
		return m.Key != nil && m.Key.Revoked
	}
	write(second)
	start := time.Now()
	w.check()
	if revoked() {
		t.Fatal("seen before the slow tick: the test does not test the tick")
	}
	for !revoked() {
		if time.Since(start) > hashEvery+time.Second {
			t.Fatalf("not seen %v after the edit, with a content check every %v", time.Since(start), hashEvery)
		}
		time.Sleep(50 * time.Millisecond)
		w.check()
	}
	if reads := w.reads; reads != 1 {
		t.Errorf("the file was read %d times in %v, want once (at the tick)", reads, time.Since(start))
	}
}
