package usage

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// FuzzUsageFile loads arbitrary usage files. A file is used whole or not at
// all: refused, it leaves the counts as they were and its error wraps
// ErrCorrupt; loaded, every counter holds possible values (a key id, a
// positive count, an hour's start no later than the next hour, a standard
// method or OTHER), no request is lost or made up, and saving and loading
// again gives the same counts.
func FuzzUsageFile(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	hour := now.Truncate(time.Hour).Unix()
	row := func(key, method string, h, n int64) string {
		return fmt.Sprintf(`{"key_id": %q, "service": "ollama", "method": %q, "endpoint": "/api/tags", "hour": %d, "requests": %d}`, key, method, h, n)
	}
	for _, s := range []string{
		`{"version": 1, "counts": []}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour, 3) + `, ` + row("k_b", "POST", hour-3600, 1) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour, 3) + `, ` + row("k_a", "GET", hour, 4) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "BREW", hour, 3) + `, ` + row(":other", "GET", hour, 2) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour+7200, 3) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour+1, 3) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour, 0) + `]}`,
		`{"version": 1, "counts": [` + row("", "GET", hour, 1) + `]}`,
		`{"version": 1, "counts": [` + row("sentinel", "GET", hour, 1) + `]}`,
		`{"version": 2, "counts": []}`, `{"version": 1}`, `{"version": 1, "counts": [], "x": 1}`, ``, `null`,
	} {
		f.Add([]byte(s))
	}

	dir := f.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "apikey-fuzz-"); err == nil { // Save syncs: keep it in memory
		f.Cleanup(func() { os.RemoveAll(shm) })
		dir = shm
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "usage.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := New()
		// A count from before the load, which a refused file must not touch.
		c.Add("sentinel", "ollama", "GET", "/api/tags", now)
		before := usageDump(c)

		if err := c.Load(path, now); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a refused file's error does not wrap ErrCorrupt: %v", err)
			}
			if usageDump(c) != before {
				t.Fatal("a refused file changed the counts")
			}
			return
		}

		total := new(big.Int)
		c.Each(func(b Bucket, n int64) {
			if b.KeyID == "" || n <= 0 || b.Hour%3600 != 0 || b.Hour > now.Add(time.Hour).Unix() || Method(b.Method) != b.Method {
				t.Fatalf("an impossible counter was loaded: %+v, %d requests", b, n)
			}
			total.Add(total, big.NewInt(n))
		})
		var file struct {
			Counts []struct {
				Requests int64 `json:"requests"`
			} `json:"counts"`
		}
		json.Unmarshal(data, &file)
		want := big.NewInt(1) // the sentinel
		for _, sc := range file.Counts {
			want.Add(want, big.NewInt(sc.Requests))
		}
		if total.Cmp(want) != 0 {
			t.Fatalf("the file holds %v requests with the one before, the counts %v", want, total)
		}

		// Saved and loaded again: the same counts.
		if err := c.Save(path); err != nil {
			t.Fatal(err)
		}
		c2 := New()
		if err := c2.Load(path, now); err != nil {
			t.Fatalf("a saved file does not load: %v", err)
		}
		if usageDump(c2) != usageDump(c) {
			t.Fatal("saving and loading again changed the counts")
		}
	})
}

// usageDump is every counter, in a stable form.
func usageDump(c *Counts) string {
	var lines []string
	c.Each(func(b Bucket, n int64) { lines = append(lines, fmt.Sprintf("%+v %d", b, n)) })
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
