package portal

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
	"github.com/moodmnky/caddy-apikey/usage"
)

// TestUsagePageTokens: the table shows each line's prompt and completion
// tokens, the heading the totals, and the chart requests by default or
// tokens with show=tokens; what the counts name is escaped.
func TestUsagePageTokens(t *testing.T) {
	now := time.Now().UTC()
	hour := now.Truncate(time.Hour)
	rows := []usage.Row{
		{Time: hour, KeyID: "k_a", Service: "ollama", Method: "POST", Endpoint: "/api/chat", Requests: 2, PromptTokens: 300, CompletionTokens: 100},
		{Time: hour.Add(-time.Hour), KeyID: "k_a", Service: "ollama", Method: "GET", Endpoint: "/<b>tags</b>", Requests: 5},
	}
	s, err := New("/portal", testPolicy(t, Policy{Admins: []string{"admin"}}), Backend{
		Store: keyfile.NewStore(t.TempDir() + "/keys.json"),
		Usage: func(context.Context, usage.Query) ([]usage.Row, error) { return rows, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(query string) string {
		t.Helper()
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("GET", "/portal/usage?all=1"+query, nil), "admin")
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d", query, w.Code)
		}
		return w.Body.String()
	}
	bars := regexp.MustCompile(`<rect class="bar" x="\d+" y="\d+" width="\d+" height="(\d+)" data-requests="(\d+)" data-tokens="(\d+)">`)
	// heights is the height of the bars with requests 2 and 5.
	heights := func(page string) map[string]string {
		h := map[string]string{}
		for _, m := range bars.FindAllStringSubmatch(page, -1) {
			if m[2] != "0" {
				h[m[2]+"/"+m[3]] = m[1]
			}
		}
		return h
	}

	page := get("")
	for _, want := range []string{
		`<label for="show">Chart</label>`,
		`<option value="requests" selected>Requests</option><option value="tokens">Tokens</option>`,
		`<th scope="col" class="num">Prompt tokens</th><th scope="col" class="num">Completion tokens</th>`,
		`<td data-label="Requests" class="num">2</td><td data-label="Prompt tokens" class="num">300</td><td data-label="Completion tokens" class="num">100</td>`,
		`<td data-label="Requests" class="num">5</td><td data-label="Prompt tokens" class="num">0</td><td data-label="Completion tokens" class="num">0</td>`,
		`Requests per hour <span class="muted">· 7 requests, 400 tokens (300 prompt, 100 completion) in all`,
		`/&lt;b&gt;tags&lt;/b&gt;`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "<b>tags") {
		t.Error("an endpoint is not escaped")
	}
	if h := heights(page); len(h) != 2 || h["5/0"] != "180" || h["2/400"] != "72" {
		t.Errorf("bars of requests: %v, want 5 requests 180 high, 2 72", h)
	}

	page = get("&show=tokens")
	if !strings.Contains(page, `<option value="tokens" selected>Tokens</option>`) || !strings.Contains(page, "Tokens per hour") {
		t.Error("show=tokens: the chart does not show tokens")
	}
	// The scale's top is a round 500 above the peak of 400: 400 is 144
	// of the chart's 180.
	if h := heights(page); len(h) != 2 || h["5/0"] != "0" || h["2/400"] != "144" {
		t.Errorf("bars of tokens: %v, want 400 tokens 144 high (scale 0–500), none 0", h)
	}
	// The table follows what the chart shows: the most tokens first.
	if i, j := strings.Index(page, "/api/chat</code>"), strings.Index(page, "tags&lt;/b&gt;</code>"); i < 0 || j < 0 || i > j {
		t.Error("show=tokens: the line with the most tokens is not first")
	}
	if page := get("&show=<script>"); !strings.Contains(page, `<option value="requests" selected>`) {
		t.Error("an unknown show does not show requests")
	}
}

// TestChartScale: the scale's top is the round number (1, 2 or 5 times a
// power of ten) at or above the peak, written short.
func TestChartScale(t *testing.T) {
	for peak, want := range map[int64]int64{1: 1, 3: 5, 5: 5, 7: 10, 20: 20, 400: 500, 1001: 2000, 49_999: 50_000} {
		if got := scaleTop(peak); got != want {
			t.Errorf("scaleTop(%d) = %d, want %d", peak, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 950: "950", 1200: "1.2k", 45_000: "45k", 3_000_000: "3M"} {
		if got := compact(n); got != want {
			t.Errorf("compact(%d) = %q, want %q", n, got, want)
		}
	}
}
