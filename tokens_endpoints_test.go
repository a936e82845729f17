package apikey

import (
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestTokenClientsEveryEndpoint: every endpoint the tokens presets count,
// streamed and not, with the official SDKs (openai 7, ollama; see
// tokens.mjs): the Responses API (responses.create, and responses.stream,
// whose event stream must reach the SDK unchanged: before, the gateway added
// stream_options, which that API refuses, and dropped response.completed's
// data line, and the SDK threw "malformed server-sent event JSON"), chat
// completions, legacy completions, embeddings; Ollama chat, generate, embed.
// Each call works as against the upstream, the SDK sees the upstream's
// usage where it reports one, the key is charged exactly what the upstream
// reported, and no answer counts as a missing report. The upstream gzips
// when asked, as api.openai.com does, and Node's fetch asks: the gateway
// must still read what it reports.
func TestTokenClientsEveryEndpoint(t *testing.T) {
	node := requireTokenSDKs(t)
	const budget = 100000
	up := newLLMUpstream(t, 5*time.Millisecond)
	up.setEncoding(encodeGzipAsked)
	key := tokenKey(t, "k_endpoints", func(r *keystore.Record) { r.TokensPerDay = int64p(budget); r.Models = []string{"llama3*"} })
	base := tokenMetricsSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "", "")
	g := newTokenGateway(t, base)
	sdk := startTokenSDK(t, node)
	missing := map[string]float64{}
	for _, svc := range []string{"openai", "ollama"} {
		missing[svc] = tokenMetric(t, base, metricMissing, svc, "")
	}

	for _, c := range []struct {
		sdk, op string
		usage   bool // the client sees the upstream's usage
		content bool // the answer has text
		path    string
	}{
		{"openai", "responses", true, true, "/v1/responses"},
		{"openai", "responses_stream", true, true, "/v1/responses"},
		{"openai", "chat", true, true, "/v1/chat/completions"},
		{"openai", "chat_stream", false, true, "/v1/chat/completions"},
		{"openai", "chat_stream_usage", true, true, "/v1/chat/completions"},
		{"openai", "completions", true, true, "/v1/completions"},
		{"openai", "completions_stream", false, true, "/v1/completions"},
		{"openai", "embeddings", true, false, "/v1/embeddings"},
		{"ollama", "chat", true, true, "/api/chat"},
		{"ollama", "chat_stream", true, true, "/api/chat"},
		{"ollama", "generate", true, true, "/api/generate"},
		{"ollama", "generate_stream", true, true, "/api/generate"},
		{"ollama", "embed", true, false, "/api/embed"},
	} {
		name := c.sdk + " " + c.op
		root := base + "/ollama"
		if c.sdk == "openai" {
			root = base + "/openai/v1"
		}
		calls, before := up.calls.Load(), up.total()
		charged := tokenMetric(t, base, metricTokens, c.sdk, "charged")
		r := sdk.run(key, map[string]any{"sdk": c.sdk, "op": c.op, "base": root, "model": "llama3", "max_tokens": 4})
		if c.content && strings.TrimSpace(r.Content) != "tok tok tok tok" {
			t.Errorf("%s: content %q, want 4 × tok", name, r.Content)
		}
		if n := up.calls.Load() - calls; n != 1 || len(r.Attempts) != 1 || r.Attempts[0].Status != 200 {
			t.Errorf("%s: %d upstream calls, %d attempts, want 1 and 1 answered 200", name, n, len(r.Attempts))
		}
		for _, a := range r.Attempts {
			g.admittedRemaining(key, a.Status, a.Remaining)
		}
		up.mu.Lock()
		path, accept, sent := up.lastPath, up.lastAccept, string(up.lastBody)
		up.mu.Unlock()
		if path != c.path {
			t.Errorf("%s: the upstream got %s, want %s", name, path, c.path)
		}
		if accept != "identity" {
			t.Errorf("%s: the upstream was asked for Accept-Encoding %q, want identity", name, accept)
		}
		if c.path == "/v1/responses" && strings.Contains(sent, "stream_options") {
			t.Errorf("%s: the gateway added stream_options to a Responses API call: %s", name, sent)
		}
		reported := checkUsage(t, name, up, before, c.usage, r)
		g.waitTokensLeft(key, budget-up.total(), "after "+name)
		waitMetric(t, base, metricTokens, c.sdk, "charged", charged+float64(reported), name+": charged")
		t.Logf("%s: %d chunks, upstream reported %d tokens, charged as much", name, r.Chunks, reported)
	}
	for svc, n := range missing {
		if got := tokenMetric(t, base, metricMissing, svc, ""); got != n {
			t.Errorf("%s: %v missing reports after answers that all reported, want %v", svc, got, n)
		}
	}
}
