package usage

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestEndpoint(t *testing.T) {
	for path, want := range map[string]string{
		"/":                     "/",
		"":                      "/",
		"/api":                  "/api",
		"/api/tags":             "/api/tags",
		"/api/tags/extra/more":  "/api/tags",
		"/api/v1/workflows/123": "/api/v1",
		"/users/123/orders":     "/users/:id",
		"/items/550e8400-e29b-41d4-a716-446655440000": "/items/:id",
		"/blobs/0123456789abcdef0123":                 "/blobs/:id",
		"/blobs/cafe":                                 "/blobs/cafe",
		"//double//slash":                             "//double//slash",
		"/123/456/789":                                "/:id/:id",
	} {
		if got := Endpoint(path, 2); got != want {
			t.Errorf("Endpoint(%q) = %q, want %q", path, got, want)
		}
	}
	if got := Endpoint("/a/b/c/d", 3); got != "/a/b/c" {
		t.Errorf("depth 3: %q", got)
	}
}

func TestEndpointAllocatesOnlyToRewrite(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Endpoint("/api/chat/stream", 2) }); n != 0 {
		t.Errorf("%v allocations for a plain path", n)
	}
}

func TestReportAndPrune(t *testing.T) {
	c := New()
	t0 := time.Date(2026, 11, 27, 10, 15, 0, 0, time.UTC)
	c.Add("k_a", "ollama", "GET", "/api/tags", t0)
	c.Add("k_a", "ollama", "GET", "/api/tags", t0.Add(10*time.Minute))
	c.Add("k_a", "ollama", "POST", "/api/chat", t0.Add(time.Hour))
	c.Add("k_b", "n8n", "GET", "/api/v1", t0.Add(2*time.Hour))
	c.Add("k_a", "ollama", "GET", "/api/tags", t0.Add(-48*time.Hour))

	rows := c.Report(Query{From: t0.Add(-time.Hour), To: t0.Add(24 * time.Hour)})
	if len(rows) != 3 || rows[0].Requests != 2 || rows[0].Time != time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) {
		t.Fatalf("hourly: %+v", rows)
	}
	rows = c.Report(Query{KeyID: "k_a", From: t0.Add(-72 * time.Hour), To: t0.Add(24 * time.Hour), ByDay: true})
	if len(rows) != 3 || rows[1].Time != time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC) || rows[1].Requests != 2 || rows[2].Requests != 1 || rows[2].Method != "POST" {
		t.Fatalf("daily for k_a: %+v", rows)
	}
	if rows := c.Report(Query{Service: "n8n", From: t0, To: t0.Add(24 * time.Hour)}); len(rows) != 1 || rows[0].KeyID != "k_b" {
		t.Fatalf("by service: %+v", rows)
	}
	c.Prune(t0.Add(-time.Hour))
	if rows := c.Report(Query{From: t0.Add(-72 * time.Hour), To: t0.Add(24 * time.Hour)}); len(rows) != 3 {
		t.Fatalf("after prune: %+v", rows)
	}
}

func TestSaveLoad(t *testing.T) {
	c := New()
	now := time.Now()
	c.Add("k_a", "ollama", "GET", "/api/tags", now)
	c.Add("k_a", "ollama", "GET", "/api/tags", now)
	path := t.TempDir() + "/usage.json"
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	back := New()
	if err := back.Load(path, now); err != nil {
		t.Fatal(err)
	}
	if rows := back.Report(Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)}); len(rows) != 1 || rows[0].Requests != 2 {
		t.Fatalf("%+v", rows)
	}
	os.WriteFile(path, []byte(`{"version":1,"counts":[{"key_id":"k","hour":7,"requests":1}]}`), 0o600)
	if err := New().Load(path, now); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a bad hour loaded: %v", err)
	}
}

func BenchmarkAdd(b *testing.B) {
	c := New()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.Add("k_bench", "ollama", "GET", Endpoint("/api/tags/x", DefaultDepth), now)
	}
}

func TestEndpointFoldsLongAndRandomSegments(t *testing.T) {
	for path, want := range map[string]string{
		"/x0000001" + strings.Repeat("y", 20000) + "/b": "/:id/b",
		"/api/" + strings.Repeat("z", MaxSegment):       "/api/" + strings.Repeat("z", MaxSegment),
		"/api/" + strings.Repeat("z", MaxSegment+1):     "/api/:id",
		"/files/aB3xK9qL2mZ7":                           "/files/:id",
		"/api/completions":                              "/api/completions",
		"/v1/embeddings":                                "/v1/embeddings",
	} {
		if got := Endpoint(path, 2); got != want {
			t.Errorf("Endpoint(%.40q…) = %.40q, want %.40q", path, got, want)
		}
	}
}

func TestCountsStayBounded(t *testing.T) {
	before := Folds.Endpoint.Load()
	c := New()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for i := range MaxEndpointsPerKeyHour + 50 {
		c.Add("k_a", "ollama", "GET", fmt.Sprintf("/e%d", i), now)
	}
	if c.Len() != MaxEndpointsPerKeyHour+1 {
		t.Errorf("%d counters for one key in one hour, want %d and one %s", c.Len(), MaxEndpointsPerKeyHour, Other)
	}
	if n := Folds.Endpoint.Load() - before; n != 50 {
		t.Errorf("%d endpoint folds counted, want 50", n)
	}
	rows := c.Report(Query{From: now, To: now.Add(time.Hour)})
	var total, other int64
	for _, r := range rows {
		total += r.Requests
		if r.Endpoint == Other {
			other = r.Requests
		}
	}
	if total != MaxEndpointsPerKeyHour+50 || other != 50 {
		t.Errorf("total %d, folded %d: nothing may be lost", total, other)
	}
	// The next hour starts a fresh allowance; made-up methods fold.
	c.Add("k_a", "ollama", "BREW", "/e1", now.Add(time.Hour))
	if rows := c.Report(Query{From: now.Add(time.Hour), To: now.Add(2 * time.Hour)}); len(rows) != 1 || rows[0].Method != OtherMethod || rows[0].Endpoint != "/e1" {
		t.Errorf("next hour: %+v", rows)
	}
}

func TestCountsTotalCap(t *testing.T) {
	c := New()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for i := range MaxSeries + 10 {
		c.Add(fmt.Sprintf("k_%d", i), "s", "GET", "/", now)
	}
	if c.Len() != MaxSeries {
		t.Errorf("%d counters, want the cap %d", c.Len(), MaxSeries)
	}
	rows := c.Report(Query{KeyID: Other, From: now, To: now.Add(time.Hour)})
	if len(rows) != 1 || rows[0].Requests != 10 {
		t.Errorf("overflow: %+v", rows)
	}
	c.Prune(now.Add(time.Hour))
	if c.Len() != 0 || len(c.Report(Query{From: now, To: now.Add(time.Hour)})) != 0 {
		t.Error("prune left counters")
	}
}

func TestPages(t *testing.T) {
	c := New()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for i := range 25 {
		c.Add(fmt.Sprintf("k_%02d", i), "s", "GET", "/", now)
	}
	rows := c.Report(Query{From: now, To: now.Add(time.Hour)})
	var got []Row
	var after *Row
	for pages := 0; ; pages++ {
		page, next := Page(rows, after, 10)
		got = append(got, page...)
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages, want 3", pages+1)
			}
			break
		}
		var err error
		if after, err = ParseCursor(next); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 25 || got[0].KeyID != "k_00" || got[24].KeyID != "k_24" {
		t.Errorf("paged rows: %d", len(got))
	}
	if _, err := ParseCursor("not-a-cursor"); err == nil {
		t.Error("a bad cursor parsed")
	}
}

// TestCursorsNeverLookLikeHashes: the admin API refuses URLs with 64 hex
// digits in a row, so a cursor must never hold one, whatever it names.
func TestCursorsNeverLookLikeHashes(t *testing.T) {
	rows := []Row{{KeyID: "k_a", Endpoint: "/qqh.Ah.Bh" + strings.Repeat("\xab\xcd\xef", 40)}, {KeyID: "k_b"}}
	_, next := Page(rows, nil, 1)
	if strings.ContainsAny(next, "0123456789abcdefABCDEF") {
		t.Fatalf("cursor %q holds hex digits", next)
	}
	if after, err := ParseCursor(next); err != nil || after.Endpoint != rows[0].Endpoint {
		t.Fatalf("the cursor does not read back: %v", err)
	}
}
