package ratelimit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

func TestSaveAndLoadKeepCounts(t *testing.T) {
	clock := newClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	p := Policy{Daily: 5, Window: DayIn(nil), Burst: rate.Rate{Limit: 2, Period: time.Minute}}
	m := NewMemory(clock.Now)
	m.Take(ctx, "k_a", p)
	m.Take(ctx, "k_a", p)
	m.Take(ctx, "k_b", p)
	path := filepath.Join(t.TempDir(), "sub", "counters.json")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm()&0o077 != 0 {
		t.Errorf("counter file mode: %v %v", info.Mode(), err)
	}

	restored := NewMemory(clock.Now)
	n, err := restored.Load(path)
	if err != nil || n != 2 {
		t.Fatalf("loaded %d, %v", n, err)
	}
	if restored.Count("k_a") != 2 || restored.Count("k_b") != 1 {
		t.Fatalf("counts %d, %d", restored.Count("k_a"), restored.Count("k_b"))
	}
	// The burst state came back too: k_a used its 2 per minute.
	if res, _ := restored.Take(ctx, "k_a", p); res.Allowed || res.DeniedBy != BurstLimit {
		t.Errorf("burst state lost: %+v", res)
	}
	// A saved count from yesterday does not count today.
	clock.Set(time.Date(2026, 11, 28, 0, 0, 1, 0, time.UTC))
	if restored.Count("k_b") != 0 {
		t.Error("yesterday's count carried over")
	}
}

func TestLoadMissingFileIsEmpty(t *testing.T) {
	m := NewMemory(nil)
	if n, err := m.Load(filepath.Join(t.TempDir(), "none.json")); n != 0 || err != nil {
		t.Fatalf("%d, %v", n, err)
	}
}

func TestLoadRefusesCorruptFiles(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":        `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{"k_a":{"window_start":17`,
		"not json":         "\x00\x01garbage",
		"empty":            ``,
		"wrong version":    `{"version":7,"saved_at":"2026-11-27T12:00:00Z","counters":{}}`,
		"negative count":   `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{"k_a":{"window_start":1795000000,"count":-5,"last_seen":1795000000}}}`,
		"no counters":      `{"version":1,"saved_at":"2026-11-27T12:00:00Z"}`,
		"unknown field":    `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{},"extra":1}`,
		"window far ahead": `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{"k_a":{"window_start":4102444800,"window_end":4102531200,"count":1,"last_seen":1795000000}}}`,
		"window too long":  `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{"k_a":{"window_start":1795000000,"window_end":1796000000,"count":1,"last_seen":1795000000}}}`,
		"tat far ahead":    `{"version":1,"saved_at":"2026-11-27T12:00:00Z","counters":{"k_a":{"window_start":1795000000,"window_end":1795086400,"count":1,"tat":4102444800000000000,"last_seen":1795000000}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "counters.json")
			os.WriteFile(path, []byte(content), 0o600)
			m := NewMemory(nil)
			_, err := m.Load(path)
			if name == "empty" {
				if err == nil {
					t.Fatal("an empty file loaded")
				}
			} else if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			if m.Len() != 0 {
				t.Fatal("part of a corrupt file was trusted")
			}
		})
	}
}

func TestSetAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counters.json")
	os.WriteFile(path, []byte("bad"), 0o600)
	aside, err := atomicfile.SetAside(path, time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(aside, "counters.json.corrupt-20261127T120000Z") {
		t.Errorf("set aside as %s", aside)
	}
	if data, _ := os.ReadFile(aside); string(data) != "bad" {
		t.Error("the corrupt content was not kept")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("the corrupt file is still in place")
	}
}

// TestCounterFileFromANewerVersion: a counter file a newer caddy-apikey
// wrote (a higher format, fields this version does not know) is refused
// with an error that says so, not as a parse error.
func TestCounterFileFromANewerVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "counters.json")
	if err := os.WriteFile(path, []byte(`{"version": 2, "saved_at": "2026-12-02T00:00:00Z", "counters": {}, "leases": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewMemory(nil).Load(path)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "newer caddy-apikey (file format 2; this version reads format 1)") {
		t.Fatalf("error %v, want one that names the newer format", err)
	}
}
