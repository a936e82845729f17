package usage

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestAddTokens: tokens go to the counter the request went to, by the same
// folding of the method and the same bounds, without counting a request;
// a counter opened by tokens alone holds no request.
func TestAddTokens(t *testing.T) {
	c := New()
	t0 := time.Date(2026, 11, 27, 10, 15, 0, 0, time.UTC)
	c.Add("k_a", "ollama", "POST", "/api/chat", t0)
	c.AddTokens("k_a", "ollama", "POST", "/api/chat", t0.Add(time.Minute), 120, 80)
	c.Add("k_a", "ollama", "POST", "/api/chat", t0.Add(2*time.Minute))
	c.AddTokens("k_a", "ollama", "POST", "/api/chat", t0.Add(3*time.Minute), 30, 20)
	// Nothing, or less than nothing, counts as no tokens and opens nothing.
	c.AddTokens("k_a", "ollama", "POST", "/api/chat", t0, -5, -1)
	c.AddTokens("k_a", "ollama", "POST", "/api/empty", t0, 0, 0)
	// An answer that ends in the next hour opens that hour's counter.
	c.AddTokens("k_a", "ollama", "POST", "/api/chat", t0.Add(time.Hour), 7, -3)
	// A made-up method folds as Add folds it, and is not a request.
	methodFolds := Folds.Method.Load()
	c.Add("k_a", "ollama", "BREW", "/api/chat", t0)
	c.AddTokens("k_a", "ollama", "BREW", "/api/chat", t0, 1, 2)
	if n := Folds.Method.Load() - methodFolds; n != 1 {
		t.Errorf("%d method folds counted for one request, want 1", n)
	}
	if c.Len() != 3 {
		t.Errorf("%d counters, want 3", c.Len())
	}
	rows := c.Report(Query{From: t0, To: t0.Add(2 * time.Hour)})
	want := []Row{
		{Time: t0.Truncate(time.Hour), KeyID: "k_a", Service: "ollama", Method: OtherMethod, Endpoint: "/api/chat", Requests: 1, PromptTokens: 1, CompletionTokens: 2},
		{Time: t0.Truncate(time.Hour), KeyID: "k_a", Service: "ollama", Method: "POST", Endpoint: "/api/chat", Requests: 2, PromptTokens: 150, CompletionTokens: 100},
		{Time: t0.Truncate(time.Hour).Add(time.Hour), KeyID: "k_a", Service: "ollama", Method: "POST", Endpoint: "/api/chat", PromptTokens: 7},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows\n%+v\nwant\n%+v", rows, want)
	}
	if rows := c.Report(Query{From: t0, To: t0.Add(2 * time.Hour), ByDay: true}); len(rows) != 2 || rows[1].Requests != 2 || rows[1].PromptTokens != 157 || rows[1].CompletionTokens != 100 {
		t.Errorf("by day: %+v", rows)
	}
}

// TestAddTokensWithinBounds: past a key's endpoints in an hour, tokens fold
// into its Other endpoint; past MaxSeries, into the hour's overflow; and
// the fold counters count requests only.
func TestAddTokensWithinBounds(t *testing.T) {
	c := New()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for i := range MaxEndpointsPerKeyHour {
		c.AddTokens("k_a", "ollama", "POST", fmt.Sprintf("/e%d", i), now, 1, 0)
	}
	before := Folds.Endpoint.Load()
	c.AddTokens("k_a", "ollama", "POST", "/past", now, 10, 20)
	c.Add("k_a", "ollama", "POST", "/past", now)
	c.AddTokens("k_a", "ollama", "POST", "/past", now, 1, 2)
	if n := Folds.Endpoint.Load() - before; n != 1 {
		t.Errorf("%d endpoint folds counted, want 1 (the one request)", n)
	}
	if c.Len() != MaxEndpointsPerKeyHour+1 {
		t.Errorf("%d counters, want %d and one %s", c.Len(), MaxEndpointsPerKeyHour, Other)
	}
	var other Row
	for _, r := range c.Report(Query{From: now, To: now.Add(time.Hour)}) {
		if r.Endpoint == Other {
			other = r
		}
	}
	if other.Requests != 1 || other.PromptTokens != 11 || other.CompletionTokens != 22 {
		t.Errorf("folded: %+v, want 1 request, 11 and 22 tokens", other)
	}

	c = New()
	for i := range MaxSeries {
		c.Add(fmt.Sprintf("k_%d", i), "s", "POST", "/", now)
	}
	before = Folds.Series.Load()
	c.AddTokens("k_new", "s", "POST", "/", now, 5, 6)
	c.Add("k_newer", "s", "POST", "/", now)
	c.AddTokens("k_newer", "s", "POST", "/", now, 1, 1)
	c.AddTokens("k_0", "s", "POST", "/", now, 2, 3) // an open counter takes its tokens
	if n := Folds.Series.Load() - before; n != 1 {
		t.Errorf("%d series folds counted, want 1 (the one request)", n)
	}
	rows := c.Report(Query{KeyID: Other, From: now, To: now.Add(time.Hour)})
	if len(rows) != 1 || rows[0].Requests != 1 || rows[0].PromptTokens != 6 || rows[0].CompletionTokens != 7 {
		t.Errorf("overflow: %+v", rows)
	}
	if rows := c.Report(Query{KeyID: "k_0", From: now, To: now.Add(time.Hour)}); len(rows) != 1 || rows[0].PromptTokens != 2 || rows[0].CompletionTokens != 3 {
		t.Errorf("k_0: %+v", rows)
	}
	// Saved and loaded, the overflow keeps its tokens.
	c = New()
	c.Put(Bucket{KeyID: Other, Hour: now.Unix()}, rows[0].tally())
	path := t.TempDir() + "/usage.json"
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	back := New()
	if err := back.Load(path, now); err != nil {
		t.Fatal(err)
	}
	if rows := back.Report(Query{KeyID: Other, From: now, To: now.Add(time.Hour)}); len(rows) != 1 || rows[0].PromptTokens != 6 || rows[0].CompletionTokens != 7 {
		t.Errorf("overflow loaded: %+v", rows)
	}
}

// TestAddAllocatesNothing: counting a request or tokens in a counter that
// is open allocates nothing.
func TestAddAllocatesNothing(t *testing.T) {
	c := New()
	now := time.Now()
	c.Add("k_a", "ollama", "POST", "/api/chat", now)
	if n := testing.AllocsPerRun(100, func() { c.Add("k_a", "ollama", "POST", "/api/chat", now) }); n != 0 {
		t.Errorf("Add: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { c.AddTokens("k_a", "ollama", "POST", "/api/chat", now, 10, 20) }); n != 0 {
		t.Errorf("AddTokens: %v allocations", n)
	}
}

// TestSaveLoadTokens: the file keeps tokens, a file of the version before
// (requests only) loads, and impossible token counts are refused.
func TestSaveLoadTokens(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	hour := now.Truncate(time.Hour).Unix()
	c := New()
	c.Add("k_a", "ollama", "POST", "/api/chat", now)
	c.AddTokens("k_a", "ollama", "POST", "/api/chat", now, 120, 80)
	c.AddTokens("k_b", "openai", "POST", "/v1/chat", now, 9, 0) // tokens, no request
	c.Add("k_c", "n8n", "GET", "/api/v1", now)
	path := t.TempDir() + "/usage.json"
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"version":2`) || !strings.Contains(string(data), `"prompt_tokens":120,"completion_tokens":80`) {
		t.Errorf("saved: %s", data)
	}
	back := New()
	if err := back.Load(path, now); err != nil {
		t.Fatal(err)
	}
	if got, want := usageDump(back), usageDump(c); got != want {
		t.Errorf("loaded\n%s\nwant\n%s", got, want)
	}

	// The version before: requests only.
	old := fmt.Sprintf(`{"version":1,"counts":[{"key_id":"k_a","service":"ollama","method":"POST","endpoint":"/api/chat","hour":%d,"requests":4},`+
		`{"key_id":":other","service":":other","method":"OTHER","endpoint":":other","hour":%d,"requests":2}]}`, hour, hour)
	os.WriteFile(path, []byte(old), 0o600)
	back = New()
	if err := back.Load(path, now); err != nil {
		t.Fatalf("a file of version 1: %v", err)
	}
	back.AddTokens("k_a", "ollama", "POST", "/api/chat", now, 3, 4)
	rows := back.Report(Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if len(rows) != 2 || rows[0].KeyID != Other || rows[0].Requests != 2 || rows[1].Requests != 4 || rows[1].PromptTokens != 3 || rows[1].CompletionTokens != 4 {
		t.Errorf("version 1 loaded, tokens added: %+v", rows)
	}

	for name, file := range map[string]string{
		"tokens in version 1":        `{"version":1,"counts":[{"key_id":"k","hour":%d,"requests":1,"prompt_tokens":3}]}`,
		"no request in version 1":    `{"version":1,"counts":[{"key_id":"k","hour":%d,"requests":0}]}`,
		"negative tokens":            `{"version":2,"counts":[{"key_id":"k","hour":%d,"requests":1,"completion_tokens":-3}]}`,
		"an empty counter":           `{"version":2,"counts":[{"key_id":"k","hour":%d,"requests":0}]}`,
		"tokens past int64":          `{"version":2,"counts":[{"key_id":"k","hour":%[1]d,"prompt_tokens":9000000000000000000},{"key_id":"k","hour":%[1]d,"prompt_tokens":9000000000000000000}]}`,
		"a version to come":          `{"version":4,"counts":[{"key_id":"k","hour":%d,"requests":1}]}`,
		"pending in version 2":       `{"version":2,"counts":[{"key_id":"k","hour":%[1]d,"requests":1}],"redis":{"unsent":[{"key_id":"k","hour":%[1]d,"requests":1}]}}`,
		"a pending count negative":   `{"version":3,"counts":[{"key_id":"k","hour":%[1]d,"requests":1}],"redis":{"unsent":[{"key_id":"k","hour":%[1]d,"requests":-1}]}}`,
		"a batch id that is not one": `{"version":3,"counts":[{"key_id":"k","hour":%[1]d,"requests":1}],"redis":{"batches":[{"id":"xyz:1","counts":[{"key_id":"k","hour":%[1]d,"requests":1}]}]}}`,
		"a batch without an id":      `{"version":3,"counts":[{"key_id":"k","hour":%[1]d,"requests":1}],"redis":{"batches":[{"id":"","counts":[{"key_id":"k","hour":%[1]d,"requests":1}]}]}}`,
		"an unknown field":           `{"version":2,"counts":[{"key_id":"k","hour":%d,"requests":1,"cached_tokens":1}]}`,
	} {
		os.WriteFile(path, fmt.Appendf(nil, file, hour), 0o600)
		c := New()
		if err := c.Load(path, now); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: loaded (%v)", name, err)
		}
		if c.Len() != 0 {
			t.Errorf("%s: a refused file left counters", name)
		}
	}
}

func (r Row) tally() Tally {
	return Tally{Requests: r.Requests, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens}
}
