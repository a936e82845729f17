package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// FuzzCounterFile loads arbitrary counter files. A file is used whole or not
// at all: refused, it leaves the counters as they were and its error wraps
// ErrCorrupt; loaded, every counter holds possible values (a window of at
// most 26 hours that does not start in the future, no negative count, no
// arrival time past what a day can reach), every decision on a loaded key
// reports possible values, and saving and loading again gives the same file.
func FuzzCounterFile(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	day := now.Truncate(24 * time.Hour).Unix()
	for _, s := range []string{
		`{"version": 1, "saved_at": "2026-03-01T11:59:50Z", "counters": {}}`,
		`{"version": 1, "saved_at": "2026-03-01T11:59:50Z", "counters": {"k_a": {"window_start": ` + itoa(day) + `, "window_end": ` + itoa(day+86400) + `, "count": 7, "tat": ` + itoa(now.UnixNano()) + `, "last_seen": ` + itoa(now.Unix()) + `}}}`,
		`{"version": 1, "counters": {"k_a": {"window_start": ` + itoa(day) + `, "window_end": ` + itoa(day+86400) + `, "count": 9223372036854775807, "last_seen": 1}}}`,
		`{"version": 1, "counters": {"k_a": {"window_start": ` + itoa(day+86400) + `, "window_end": ` + itoa(day+2*86400) + `, "count": 0, "last_seen": 1}}}`,
		`{"version": 1, "counters": {"k_a": {"window_start": 1, "window_end": 90001, "count": 0, "last_seen": 1}}}`,
		`{"version": 1, "counters": {"k_a": {"window_start": ` + itoa(day) + `, "window_end": ` + itoa(day+86400) + `, "count": -1, "last_seen": 1}}}`,
		`{"version": 1, "counters": {"": {"window_start": 1, "window_end": 2, "count": 0, "last_seen": 1}}}`,
		`{"version": 1, "counters": {"sentinel": {"window_start": 1, "window_end": 2, "count": 0, "last_seen": 1}}}`,
		`{"version": 2, "counters": {}}`, `{"version": 1}`, `{"version": 1, "counters": {}} {}`,
		`{"version": 1, "counters": {}, "extra": 1}`, ``, `null`,
	} {
		f.Add([]byte(s))
	}

	dir := fuzzDir(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "counters.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		clock := func() time.Time { return now }
		policy := Policy{Daily: 10, Window: DayIn(time.UTC), Burst: rate.Rate{Limit: 5, Period: time.Second}}
		m := NewMemory(clock)
		// A counter from before the load, which a refused file must not touch.
		m.Take(context.Background(), "sentinel", policy)
		before := dump(t, m)

		n, err := m.Load(path)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a refused file's error does not wrap ErrCorrupt: %v", err)
			}
			if n != 0 || !bytes.Equal(dump(t, m), before) {
				t.Fatal("a refused file changed the counters")
			}
			return
		}
		if want := n + 1; m.Len() != want && !(m.Len() == n && strings.Contains(string(data), `"sentinel"`)) {
			t.Fatalf("loaded %d counters, holds %d", n, m.Len())
		}

		latest := now.Add(maxWindow)
		for i := range m.shards {
			for key, c := range m.shards[i].counters {
				if key == "" || c.count < 0 || c.windowStart <= 0 || c.windowEnd <= c.windowStart ||
					c.windowEnd-c.windowStart > int64(maxWindow/time.Second) || c.windowStart > latest.Unix() ||
					c.lastSeen <= 0 || c.lastSeen > latest.Unix() || c.tat < 0 || c.tat > latest.UnixNano() {
					t.Fatalf("key id %q holds impossible values: %+v", key, *c)
				}
			}
		}

		// Decisions on loaded keys report possible values.
		var keys []string
		for i := range m.shards {
			for key := range m.shards[i].counters {
				keys = append(keys, key)
			}
		}
		for _, key := range keys {
			res, _ := m.Take(context.Background(), key, policy)
			for _, u := range []Usage{res.Daily, res.Burst} {
				if u.Remaining < 0 || u.Remaining > u.Limit || u.Reset.Before(now) || u.Reset.Sub(now) > 2*maxWindow {
					t.Fatalf("key id %q: impossible usage %+v", key, u)
				}
			}
			if !res.Allowed && (res.RetryAfter <= 0 || res.RetryAfter > 2*maxWindow) {
				t.Fatalf("key id %q: refused with Retry-After %v", key, res.RetryAfter)
			}
			if c := m.Count(key); c < 0 || c > policy.Daily && res.Allowed {
				t.Fatalf("key id %q: count %d after an admitted request", key, c)
			}
		}

		// Saved and loaded again: the same counters.
		if err := m.Save(path); err != nil {
			t.Fatal(err)
		}
		m2 := NewMemory(clock)
		if _, err := m2.Load(path); err != nil {
			t.Fatalf("a saved file does not load: %v", err)
		}
		if !bytes.Equal(dump(t, m2), dump(t, m)) {
			t.Fatal("saving and loading again changed the counters")
		}
	})
}

// dump is m's counters, in a stable form.
func dump(t *testing.T, m *Memory) []byte {
	t.Helper()
	all := map[string]counter{}
	for i := range m.shards {
		for key, c := range m.shards[i].counters {
			all[key] = *c
		}
	}
	return []byte(fmt.Sprintf("%+v", all)) // fmt sorts map keys
}

// fuzzDir is a folder for the files a fuzz target writes: in memory where
// the system has one, as Save syncs every file it writes.
func fuzzDir(f *testing.F) string {
	if dir, err := os.MkdirTemp("/dev/shm", "apikey-fuzz-"); err == nil {
		f.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return f.TempDir()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
