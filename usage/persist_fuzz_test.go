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

// FuzzUsageFile loads arbitrary usage files, of this version (with counts
// pending for Redis) or the ones before (with tokens, requests only). A file is used whole or not at all: refused, it leaves
// the counts as they were and its error wraps ErrCorrupt; loaded, every
// counter holds possible values (a key id, counts none negative and not all
// zero, an hour's start no later than the next hour, a standard method or
// OTHER), no request or token is lost or made up, and saving and loading
// again gives the same counts.
func FuzzUsageFile(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	hour := now.Truncate(time.Hour).Unix()
	row := func(key, method string, h, n int64) string {
		return fmt.Sprintf(`{"key_id": %q, "service": "ollama", "method": %q, "endpoint": "/api/tags", "hour": %d, "requests": %d}`, key, method, h, n)
	}
	tokRow := func(key string, h, n, p, c int64) string {
		return fmt.Sprintf(`{"key_id": %q, "service": "ollama", "method": "POST", "endpoint": "/api/chat", "hour": %d, "requests": %d, "prompt_tokens": %d, "completion_tokens": %d}`, key, h, n, p, c)
	}
	for _, s := range []string{
		`{"version": 2, "counts": [` + tokRow("k_a", hour, 3, 120, 80) + `, ` + tokRow("k_a", hour, 0, 5, 0) + `, ` + row("k_b", "GET", hour, 1) + `]}`,
		`{"version": 2, "counts": [` + tokRow(":other", hour, 2, 7, 9) + `]}`,
		`{"version": 2, "counts": [` + tokRow("k_a", hour, 0, 0, 0) + `]}`,
		`{"version": 2, "counts": [` + tokRow("k_a", hour, 1, -5, 0) + `]}`,
		`{"version": 1, "counts": [` + tokRow("k_a", hour, 1, 5, 0) + `]}`,
		`{"version": 1, "counts": []}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour, 3) + `, ` + row("k_b", "POST", hour-3600, 1) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour, 3) + `, ` + row("k_a", "GET", hour, 4) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "BREW", hour, 3) + `, ` + row(":other", "GET", hour, 2) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour+7200, 3) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour+1, 3) + `]}`,
		`{"version": 1, "counts": [` + row("k_a", "GET", hour, 0) + `]}`,
		`{"version": 1, "counts": [` + row("", "GET", hour, 1) + `]}`,
		`{"version": 1, "counts": [` + row("sentinel", "GET", hour, 1) + `]}`,
		`{"version": 3, "counts": [` + row("k_a", "GET", hour, 3) + `], "redis": {"batches": [{"id": "0a1b2c3d4e5f6071:42", "counts": [` + row("k_a", "GET", hour, 2) + `]}], "unsent": [` + row("k_a", "GET", hour, 1) + `]}}`,
		`{"version": 3, "counts": [` + row("k_a", "GET", hour, 3) + `], "redis": {"batches": [{"id": "", "counts": []}]}}`,
		`{"version": 2, "counts": [` + row("k_a", "GET", hour, 3) + `], "redis": {"unsent": [` + row("k_a", "GET", hour, 1) + `]}}`,
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

		total := [3]*big.Int{new(big.Int), new(big.Int), new(big.Int)}
		c.Each(func(b Bucket, n Tally) {
			if b.KeyID == "" || n.Requests < 0 || n.PromptTokens < 0 || n.CompletionTokens < 0 || n == (Tally{}) ||
				b.Hour%3600 != 0 || b.Hour > now.Add(time.Hour).Unix() || Method(b.Method) != b.Method {
				t.Fatalf("an impossible counter was loaded: %+v, %+v", b, n)
			}
			for i, v := range []int64{n.Requests, n.PromptTokens, n.CompletionTokens} {
				total[i].Add(total[i], big.NewInt(v))
			}
		})
		var file struct {
			Counts []Tally `json:"counts"`
		}
		json.Unmarshal(data, &file)
		want := [3]*big.Int{big.NewInt(1), new(big.Int), new(big.Int)} // the sentinel
		for _, sc := range file.Counts {
			for i, v := range []int64{sc.Requests, sc.PromptTokens, sc.CompletionTokens} {
				want[i].Add(want[i], big.NewInt(v))
			}
		}
		for i, what := range []string{"requests", "prompt tokens", "completion tokens"} {
			if total[i].Cmp(want[i]) != 0 {
				t.Fatalf("the file holds %v %s with the sentinel's, the counts %v", want[i], what, total[i])
			}
		}

		// The outbox loads the file too, and a save of it keeps the same
		// counts and the same pending for Redis.
		o, oc := NewOutbox(), New()
		if err := o.Load(oc, path, now); err != nil {
			t.Fatalf("the outbox refuses a file the counts load: %v", err)
		}
		pending := outboxDump(o)
		if err := o.Save(path); err != nil {
			t.Fatal(err)
		}
		o, oc2 := NewOutbox(), New()
		if err := o.Load(oc2, path, now); err != nil {
			t.Fatalf("a file the outbox saved does not load: %v", err)
		}
		if outboxDump(o) != pending || usageDump(oc2) != usageDump(oc) {
			t.Fatal("saving the outbox and loading it again changed what it holds")
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
	c.Each(func(b Bucket, n Tally) { lines = append(lines, fmt.Sprintf("%+v %+v", b, n)) })
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// outboxDump is what an outbox holds as pending, in a stable form.
func outboxDump(o *Outbox) string {
	var lines []string
	for b, n := range o.unsent {
		lines = append(lines, fmt.Sprintf("unsent %+v %+v", b, n))
	}
	sort.Strings(lines)
	for _, b := range o.batches {
		var counts []string
		for _, d := range b.counts {
			counts = append(counts, fmt.Sprintf("%+v %+v", d.b, d.t))
		}
		sort.Strings(counts)
		lines = append(lines, "batch "+b.id.String()+": "+strings.Join(counts, "; "))
	}
	return strings.Join(lines, "\n")
}
