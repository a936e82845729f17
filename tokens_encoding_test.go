package apikey

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// compressedCall sends a request with the client's Accept-Encoding: gzip
// (so Go's transport does not decode for it) and returns the answer's
// Content-Encoding and its body, gunzipped when it says gzip.
func compressedCall(t *testing.T, g *tokenGateway, k gatewaytest.Key, path, body string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatalf("%s (key %s): %v", path, k.Record.ID, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the answer: %v", path, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
	}
	g.admitted(k, resp)
	ce := resp.Header.Get("Content-Encoding")
	if ce == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: Content-Encoding gzip, and not gzip: %v", path, err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: a broken gzip answer: %v", path, err)
		}
	}
	return ce, string(raw)
}

// TestTokenCompressedAnswers: clients that accept gzip (Node's fetch, curl
// --compressed, most SDKs) in front of upstreams that compress. The key
// must be charged exactly what the upstream reported, the usage and the
// metrics must count it, and the client must get a valid answer:
//   - an upstream that gzips when asked (api.openai.com does): the gateway
//     asks it for identity, so the answer streams plain past the scanner;
//     before, the scanner read gzip bytes and charged the reservation;
//   - an upstream that compresses anyway (gzip, zstd): the gateway decodes
//     it and passes it on decoded (it may hide the usage chunk);
//   - an upstream that sends an encoding the gateway cannot read (br): the
//     answer passes unread, and is charged its reservation, a missing
//     report;
//   - Caddy's encode in front of the route: the client gets gzip, and the
//     count is still right.
func TestTokenCompressedAnswers(t *testing.T) {
	const budget = 1000000
	up := newLLMUpstream(t, 2*time.Millisecond)
	key := tokenKey(t, "k_gzip", func(r *keystore.Record) { r.TokensPerDay = int64p(budget) })
	keys := gatewaytest.WriteKeyFile(t, key.Record)
	// ndjson: Caddy's encode does not compress application/x-ndjson by
	// default (not in its match list).
	calls := []struct {
		service, path, body, text string
		ndjson                    bool
	}{
		{"openai", "/openai/v1/chat/completions", `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`, "tok tok tok tok", false},
		{"openai", "/openai/v1/chat/completions", `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}`, `"content":"tok "`, false},
		{"openai", "/openai/v1/responses", `{"model":"llama3","input":"hi","max_output_tokens":4,"stream":true}`, "response.completed", false},
		{"openai", "/openai/v1/embeddings", `{"model":"llama3","input":"hi"}`, `"embedding"`, false},
		{"ollama", "/ollama/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":4}}`, `"done":true`, true},
		{"ollama", "/ollama/api/generate", `{"model":"llama3","prompt":"hi","stream":false,"options":{"num_predict":4}}`, "tok tok tok tok", false},
	}
	for _, c := range []struct {
		name     string
		encoding upstreamEncoding
		site     string // Caddyfile lines at the site's top level
		clientCE string // the Content-Encoding the client gets
	}{
		{"upstream gzips when asked", encodeGzipAsked, "", ""},
		{"upstream always gzips", encodeGzip, "", ""},
		{"upstream always zstd", encodeZstd, "", ""},
		// minimum_length 1: encode leaves answers under 512 bytes alone by default.
		{"caddy encode in front", encodeGzipAsked, "encode gzip {\n\t\tminimum_length 1\n\t}", "gzip"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up.setEncoding(c.encoding)
			base := tokenMetricsSite(t, up, keys, "", c.site)
			g := newTokenGateway(t, base)
			for _, call := range calls {
				what := call.path + " " + call.body
				left := g.tokensLeft(key)
				prompt := tokenMetric(t, base, metricTokens, call.service, "prompt")
				completion := tokenMetric(t, base, metricTokens, call.service, "completion")
				missing := tokenMetric(t, base, metricMissing, call.service, "")
				before := up.total()
				ce, text := compressedCall(t, g, key, call.path, call.body)
				if want := c.clientCE; ce != want && !(call.ndjson && ce == "") {
					t.Errorf("%s: the client got Content-Encoding %q, want %q", what, ce, want)
				}
				if !strings.Contains(text, call.text) {
					t.Errorf("%s: the answer does not have %s: %.300q", what, call.text, text)
				}
				if strings.Contains(call.body, `"stream":true`) && strings.Contains(call.path, "chat") && strings.Contains(text, `"usage"`) {
					t.Errorf("%s: the client got the usage it did not ask for: %.300q", what, text)
				}
				up.mu.Lock()
				accept := up.lastAccept
				up.mu.Unlock()
				if accept != "identity" {
					t.Errorf("%s: the upstream was asked for %q, want identity", what, accept)
				}
				reported := up.total() - before
				p, cp := up.last()
				if reported <= 0 || p+cp != reported {
					t.Fatalf("%s: the upstream reported %d", what, reported)
				}
				g.waitTokensLeft(key, left-reported, what)
				waitMetric(t, base, metricTokens, call.service, "prompt", prompt+float64(p), what+": prompt tokens")
				waitMetric(t, base, metricTokens, call.service, "completion", completion+float64(cp), what+": completion tokens")
				if got := tokenMetric(t, base, metricMissing, call.service, ""); got != missing {
					t.Errorf("%s: missing reports %v -> %v", what, missing, got)
				}
			}
		})
	}

	t.Run("upstream sends br", func(t *testing.T) {
		up.setEncoding(encodeBrotli)
		defer up.setEncoding(encodeNever)
		base := tokenMetricsSite(t, up, keys, "", "")
		g := newTokenGateway(t, base)
		body := `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`
		left := g.tokensLeft(key)
		missing := tokenMetric(t, base, metricMissing, "openai", "")
		if ce, _ := compressedCall(t, g, key, "/openai/v1/chat/completions", body); ce != "br" {
			t.Errorf("the answer passes on as the upstream labelled it: Content-Encoding %q, want br", ce)
		}
		g.waitTokensLeft(key, left-reserveOf(body, 4), "an answer the gateway cannot read is charged its reservation")
		waitMetric(t, base, metricMissing, "openai", "", missing+1, "an answer the gateway cannot read is a missing report")
	})
}

// TestTokenStreamDecodedIncremental: a stream the upstream compresses
// although asked for identity is decoded as it comes, not held until it
// ends: the first chunk reaches the client long before the last.
func TestTokenStreamDecodedIncremental(t *testing.T) {
	const gap = 150 * time.Millisecond
	up := newLLMUpstream(t, gap)
	up.setEncoding(encodeGzip)
	key := tokenKey(t, "k_gzip_stream", func(r *keystore.Record) { r.TokensPerDay = int64p(100000) })
	base := tokenMetricsSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "", "")
	for _, path := range []string{"/openai/v1/chat/completions", "/ollama/api/chat"} {
		body := `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"options":{"num_predict":5},"stream":true}`
		resp, lines := streamRequest(t, base+path, key, body)
		if ce := resp.Header.Get("Content-Encoding"); ce != "" {
			t.Fatalf("%s: Content-Encoding %q, want the stream decoded", path, ce)
		}
		var content []streamLine
		for _, l := range lines {
			if strings.Contains(l.text, "tok ") {
				content = append(content, l)
			}
		}
		if len(content) != 5 {
			t.Fatalf("%s: %d content lines, want 5: %v", path, len(content), lines)
		}
		if spread := content[4].at - content[0].at; spread < 3*gap {
			t.Errorf("%s: the 5 chunks arrived within %v, want them about %v apart (the stream was held)", path, spread, gap)
		}
	}
}
