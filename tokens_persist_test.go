package apikey

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

var tokensDailyRemaining = regexp.MustCompile(`"tokens-daily";r=(\d+);`)

// TestTokenCountsSurviveRestart: token counts are saved with the request
// counters and are where they were after Caddy stops and starts again.
func TestTokenCountsSurviveRestart(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := newKey(t, keystore.Dev, keystore.Record{ID: "k_tokens_restart", Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(100000)})
	keys := writeKeyFile(t, key.record)
	counters := filepath.Join(t.TempDir(), "counters.json")
	extra := fmt.Sprintf("counters memory {\n\t\t\t\tfile %s\n\t\t\t}", counters)

	remaining := func(base string) string {
		t.Helper()
		resp, _ := post(t, base+"/openai/v1/models", key.secret, "")
		m := tokensDailyRemaining.FindStringSubmatch(resp.Header.Get("RateLimit"))
		if m == nil {
			t.Fatalf("no tokens-daily in RateLimit %q", resp.Header.Get("RateLimit"))
		}
		return m[1]
	}
	base := tokenSite(t, up, keys, extra)
	resp, _ := post(t, base+"/openai/v1/chat/completions", key.secret, `{"model":"llama3","messages":[{"role":"user","content":"hello there"}],"max_tokens":50}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d", resp.StatusCode)
	}
	before := remaining(base)
	if before == "100000" || !strings.HasPrefix(before, "99") {
		t.Fatalf("after one answer %s tokens remain; the report was not charged", before)
	}
	if err := stopCaddy(); err != nil {
		t.Fatal(err)
	}
	base = tokenSite(t, up, keys, extra)
	if after := remaining(base); after != before {
		t.Fatalf("after a restart %s tokens remain, before it %s", after, before)
	}
}

// TestTokenWarningEvents: apikey_token_warning at 80 % and 90 % of a key's
// daily token budget, once each, with the numbers settled.
func TestTokenWarningEvents(t *testing.T) {
	up := newLLMUpstream(t, 0)
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	key := newKey(t, keystore.Dev, keystore.Record{ID: "k_token_events_" + suffix, Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(1000)})
	port := freePort(t)
	doc := adaptJSON(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		tokens openai
		failed_auth_limit off
	}
	reverse_proxy %s
}`, port, writeKeyFile(t, key.record), strings.TrimPrefix(up.URL, "http://")))
	doc["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{eventTokenWarning},
		"handlers": []any{map[string]any{"handler": "apikey_test_recorder"}},
	}}}
	takeEvents()
	loadJSON(t, doc)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Each answer reports 5 completion tokens and len(body)/8 prompt tokens.
	body := `{"model":"llama3","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("x", 40) + `"}]}`
	var levels []any
	for range 70 {
		if resp, _ := post(t, base+"/v1/chat/completions", key.secret, body); resp.StatusCode != 200 {
			break
		}
		for _, e := range takeEvents() {
			levels = append(levels, e.Data["percent"])
			if e.Data["key_id"] != key.record.ID || e.Data["limit"] != int64(1000) {
				t.Errorf("event data %v", e.Data)
			}
			if used, _ := e.Data["used"].(int64); used*100 < e.Data["percent"].(int64)*1000 || used > 1000 {
				t.Errorf("event says %d used at %v %%", used, e.Data["percent"])
			}
		}
	}
	if fmt.Sprint(levels) != "[80 90]" {
		t.Fatalf("token warnings %v, want [80 90]", levels)
	}
}
