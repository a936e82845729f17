package apikey

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

var tokensDailyRemaining = regexp.MustCompile(`"tokens-daily";r=(\d+);`)

// TestTokenCountsSurviveRestart: token counts are saved with the request
// counters and are where they were after Caddy stops and starts again.
func TestTokenCountsSurviveRestart(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_tokens_restart", Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(100000)})
	keys := gatewaytest.WriteKeyFile(t, key.Record)
	counters := filepath.Join(t.TempDir(), "counters.json")
	extra := fmt.Sprintf("counters memory {\n\t\t\t\tfile %s\n\t\t\t}", counters)

	remaining := func(base string) string {
		t.Helper()
		resp, _ := post(t, base+"/openai/v1/models", key.Secret, "")
		m := tokensDailyRemaining.FindStringSubmatch(resp.Header.Get("RateLimit"))
		if m == nil {
			t.Fatalf("no tokens-daily in RateLimit %q", resp.Header.Get("RateLimit"))
		}
		return m[1]
	}
	base := tokenSite(t, up, keys, extra)
	resp, _ := post(t, base+"/openai/v1/chat/completions", key.Secret, `{"model":"llama3","messages":[{"role":"user","content":"hello there"}],"max_tokens":50}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d", resp.StatusCode)
	}
	before := remaining(base)
	if before == "100000" || !strings.HasPrefix(before, "99") {
		t.Fatalf("after one answer %s tokens remain; the report was not charged", before)
	}
	if err := gatewaytest.Stop(); err != nil {
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
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_token_events_" + suffix, Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(1000)})
	port := gatewaytest.Port(t)
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
}`, port, gatewaytest.WriteKeyFile(t, key.Record), strings.TrimPrefix(up.URL, "http://")))
	doc["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{eventTokenWarning},
		"handlers": []any{map[string]any{"handler": "apikey_test_recorder"}},
	}}}
	takeEvents()
	gatewaytest.StartJSON(t, doc)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Each answer reports 5 completion tokens and len(body)/8 prompt tokens.
	body := `{"model":"llama3","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("x", 40) + `"}]}`
	var levels []any
	for range 70 {
		if resp, _ := post(t, base+"/v1/chat/completions", key.Secret, body); resp.StatusCode != 200 {
			break
		}
		for _, e := range takeEvents() {
			levels = append(levels, e.Data["percent"])
			if e.Data["key_id"] != key.Record.ID || e.Data["limit"] != int64(1000) {
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

// TestTokenModelsAndLimitsAsUpstreamsReadThem: model names as Ollama reads them,
// copies (n), and streams past their limit are counted as the upstream would, through a real Caddy.
func TestTokenModelsAndLimitsAsUpstreamsReadThem(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_token_review", Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(100000), Models: []string{"llama3*", "ignores-limit"}})
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "")
	chat := base + "/openai/v1/chat/completions"
	calls := up.calls.Load()
	for _, body := range []string{
		`{"model":"gpt-4o","Model":"llama3","max_tokens":5}`,
		`{"model":"llama3","max_tokens":1,"MAX_TOKENS":5000}`,
		`{"model":"llama3","stream":true,"Stream_options":{"include_usage":true}}`,
		`{"model":"llama3","model":"gpt-4o"}`,
	} {
		resp, got := post(t, chat, key.Secret, body)
		if resp.StatusCode != 400 || !strings.Contains(got, "ambiguous") {
			t.Errorf("%s: %d %s, want 400 ambiguous", body, resp.StatusCode, got)
		}
	}
	if up.calls.Load() != calls {
		t.Fatal("an ambiguous body reached the upstream")
	}
	// Model names as Ollama takes them: the allowlist sees through case,
	// registry and tag.
	if resp, _ := post(t, chat, key.Secret, `{"model":"registry.ollama.ai/library/LLAMA3:latest","max_tokens":5}`); resp.StatusCode != 200 {
		t.Errorf("an allowed model under another of its names: %d", resp.StatusCode)
	}
	// n multiplies the reservation.
	resp, _ := post(t, base+"/openai/v1/models", key.Secret, "")
	before, _ := strconv.Atoi(tokensDailyRemaining.FindStringSubmatch(resp.Header.Get("RateLimit"))[1])
	up.setGap(200 * time.Millisecond)
	held, err := http.NewRequest(http.MethodPost, chat, strings.NewReader(`{"model":"llama3","max_tokens":100,"n":10,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	held.Header.Set("Authorization", "Bearer "+key.Secret)
	hresp, err := gatewaytest.Client.Do(held)
	if err != nil {
		t.Fatal(err)
	}
	during, _ := strconv.Atoi(tokensDailyRemaining.FindStringSubmatch(hresp.Header.Get("RateLimit"))[1])
	if reserved := before - during; reserved < 1000 {
		t.Errorf("max_tokens 100 with n 10 reserved %d, want at least 1000", reserved)
	}
	io.Copy(io.Discard, hresp.Body)
	hresp.Body.Close()
	up.setGap(0)

	// A stream that runs past its limit and reports nothing is charged at
	// least a token per chunk it passed.
	resp, _ = post(t, base+"/openai/v1/models", key.Secret, "")
	before, _ = strconv.Atoi(tokensDailyRemaining.FindStringSubmatch(resp.Header.Get("RateLimit"))[1])
	resp, got := post(t, chat, key.Secret, `{"model":"ignores-limit","max_tokens":1,"stream":true}`)
	if resp.StatusCode != 200 || strings.Count(got, `"content"`) < 300 {
		t.Fatalf("the long stream: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ = post(t, base+"/openai/v1/models", key.Secret, "")
		after, _ := strconv.Atoi(tokensDailyRemaining.FindStringSubmatch(resp.Header.Get("RateLimit"))[1])
		if charged := before - after; charged >= 300 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("300 chunks without a report were charged %d", charged)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
