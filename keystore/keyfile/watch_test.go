package keyfile

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestWatcherSettlesOnAFutureModTime: a key file whose modification time is
// an hour ahead is compared by content only while it is fresh; once the
// watcher has seen it unchanged for settleTime, polls stop reading it. A
// later change is still picked up, and so is a same-size rewrite right
// after it that keeps the same (future) modification time.
func TestWatcherSettlesOnAFutureModTime(t *testing.T) {
	a, aHash := hashOf(t, keystore.Dev)
	b, bHash := hashOf(t, keystore.Dev)
	c, cHash := hashOf(t, keystore.Dev)
	path := filepath.Join(t.TempDir(), "keys.json")
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	record := func(id, hash string) string {
		return `{"id": "` + id + `", "hash": "` + hash + `", "role": "reader"}`
	}
	write(`{"keys": [`+record("k_one", aHash)+`]}`, future)

	w, err := watchFile("keys.json", path)
	if err != nil {
		t.Fatal(err)
	}
	w.Destruct() // stop the poller: this test polls by hand, with w.check
	reads := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.reads
	}
	// poll checks the file every 50 ms for d and returns how many times it
	// was read meanwhile.
	poll := func(d time.Duration) int {
		before := reads()
		for end := time.Now().Add(d); time.Now().Before(end); {
			w.check()
			time.Sleep(50 * time.Millisecond)
		}
		return reads() - before
	}
	has := func(key string) bool {
		m := w.set.Load().Lookup(keystore.Sum(key))
		return m.Key != nil
	}

	if n := poll(time.Second); n == 0 {
		t.Error("a fresh file was not compared by content") // what the same-size rewrite check needs
	}
	poll(settleTime)
	if n := poll(time.Second); n != 0 {
		t.Fatalf("the settled file, modified an hour ahead, was read %d times in a second of polls", n)
	}

	// A real change (another size, another future time) is picked up.
	write(`{"keys": [`+record("k_one", aHash)+`, `+record("k_two", bHash)+`]}`, future.Add(time.Second))
	w.check()
	if !has(a) || !has(b) {
		t.Fatal("the change was missed")
	}
	// Right after it, a same-size rewrite with the same modification time
	// is still seen.
	write(`{"keys": [`+record("k_one", aHash)+`, `+record("k_two", cHash)+`]}`, future.Add(time.Second))
	w.check()
	if !has(c) || has(b) {
		t.Fatal("the same-size rewrite with the same future modification time was missed")
	}
	// And it settles again.
	poll(settleTime + 200*time.Millisecond)
	if n := poll(time.Second); n != 0 {
		t.Errorf("read %d times after settling again", n)
	}
}
