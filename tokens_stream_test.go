package apikey

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/tokens"
)

// tokenMetricsSite is tokenSite with Caddy's metrics handler at /metrics,
// for the tests that read caddy_apikey_token_* from the real server. extra
// goes in both apikey blocks; site goes at the site's top level.
func tokenMetricsSite(t *testing.T, up *llmUpstream, keys, extra, site string) string {
	t.Helper()
	port := gatewaytest.Port(t)
	route := func(prefix, format string) string {
		return fmt.Sprintf(`
	handle_path /%[1]s/* {
		apikey {
			keys file %[2]s
			service %[1]s
			tokens %[3]s
			failed_auth_limit off
			%[4]s
		}
		reverse_proxy %[5]s {
			flush_interval -1
		}
	}`, prefix, keys, format, extra, strings.TrimPrefix(up.URL, "http://"))
	}
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	%s
	handle /metrics {
		metrics
	}
	%s
	%s
}
`, port, site, route("openai", "openai"), route("ollama", "ollama")))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// tokenMetric reads a caddy_apikey_token* counter of a service from the
// gateway's /metrics (0 when absent).
func tokenMetric(t *testing.T, base, name, service, kind string) float64 {
	t.Helper()
	resp, err := gatewaytest.Client.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	labels := map[string]string{"service": service}
	if kind != "" {
		labels["kind"] = kind
	}
	v, _ := gatewaytest.MetricValue(t, string(data), name, labels)
	return v
}

const (
	metricMissing = "caddy_apikey_token_reports_missing_total"
	metricTokens  = "caddy_apikey_tokens_total"
)

// waitMetric waits until a token counter reaches want.
func waitMetric(t *testing.T, base, name, service, kind string, want float64, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := tokenMetric(t, base, name, service, kind)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %s{service=%q,kind=%q} is %v, want %v", what, name, service, kind, got, want)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readThenHangUp is a client that sends a streamed request over its own
// connection, reads the first n content lines of the answer (lines that
// carry "tok "), then closes the connection, as a user who stops a
// generation does. g checks the request was counted.
func readThenHangUp(t *testing.T, g *tokenGateway, path string, k gatewaytest.Key, body string, n int) {
	t.Helper()
	base := g.base
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	req.Header.Set("Content-Type", "application/json")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("%s (key %s): %v", path, k.Record.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s (key %s): %d %s", path, k.Record.ID, resp.StatusCode, data)
	}
	g.admitted(k, resp)
	lines := bufio.NewReader(resp.Body)
	for read := 0; read < n; {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: the stream ended after %d content lines, before %d: %v", path, read, n, err)
		}
		if strings.Contains(line, "tok ") {
			read++
		}
	}
}

// TestTokenCutStreamSettles: a client that reads 290 chunks of a 300-chunk
// stream and hangs up, through a real reverse_proxy (which then panics with
// http.ErrAbortHandler). The answer never reported its usage; its
// reservation (default_max_tokens 20 plus the prompt) is far below what it
// passed, so the key must be charged the content chunks the gateway passed
// on (at least the 290 the client read, at most the 295 the upstream sent
// before it stopped), and the answer counted as a missing report; on the
// memory store and on Redis, for OpenAI's event stream and Ollama's NDJSON.
// Before the settlement was deferred, the reservation stayed charged and
// the metric did not move.
func TestTokenCutStreamSettles(t *testing.T) {
	const budget, read, sent = 100000, 290, 295
	for _, store := range []string{"memory", "redis"} {
		t.Run(store, func(t *testing.T) {
			extra := "default_max_tokens 20"
			if store == "redis" {
				srv := redistest.Start(t)
				extra += fmt.Sprintf("\n\t\t\tcounters redis {\n\t\t\t\taddress %s\n\t\t\t\ttimeout 2s\n\t\t\t}", srv.Addr())
			}
			up := newLLMUpstream(t, time.Millisecond)
			up.holdAt.Store(sent)
			key := tokenKey(t, "k_cut_"+store, func(r *keystore.Record) { r.TokensPerDay = int64p(budget) })
			base := tokenMetricsSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), extra, "")
			g := newTokenGateway(t, base)
			left := g.tokensLeft(key)
			if left != budget {
				t.Fatalf("a fresh key has %d tokens left, want %d", left, budget)
			}
			for _, c := range []struct{ service, path, body string }{
				{"openai", "/openai/v1/chat/completions", `{"model":"long","messages":[{"role":"user","content":"write a long story"}],"stream":true}`},
				{"ollama", "/ollama/api/chat", `{"model":"long","messages":[{"role":"user","content":"write a long story"}]}`},
			} {
				missing := tokenMetric(t, base, metricMissing, c.service, "")
				charged := tokenMetric(t, base, metricTokens, c.service, "charged")
				cuts, reported := up.cut.Load(), up.total()
				if reserve := reserveOf(c.body, 20); reserve >= read {
					t.Fatalf("the reservation %d must be below the chunks read", reserve)
				}
				readThenHangUp(t, g, c.path, key, c.body, read)
				deadline := time.Now().Add(5 * time.Second)
				for up.cut.Load() == cuts && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if up.cut.Load() == cuts || up.total() != reported {
					t.Fatalf("%s: the upstream did not see the client go", c.path)
				}
				// Settled once, to what the stream passed.
				deadline = time.Now().Add(5 * time.Second)
				var now int64
				for {
					now = g.tokensLeft(key)
					if d := left - now; (d >= read && d <= sent) || time.Now().After(deadline) {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				if d := left - now; d < read || d > sent {
					t.Errorf("%s (%s): a stream cut after %d chunks was charged %d tokens, want %d to %d", c.path, store, read, d, read, sent)
				}
				waitMetric(t, base, metricMissing, c.service, "", missing+1, c.path+": the cut stream is a missing report")
				waitMetric(t, base, metricTokens, c.service, "charged", charged+float64(left-now), c.path+": charged tokens")
				left = now
			}
		})
	}
}

// TestTokenMissingReports: only answers that should have reported usage
// count as missing reports: GET /v1/models (no usage, ever) does not; an
// upstream error does not; a 2xx chat answer without usage does.
func TestTokenMissingReports(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := tokenKey(t, "k_missing", func(r *keystore.Record) { r.TokensPerDay = int64p(100000) })
	base := tokenMetricsSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "", "")
	g := newTokenGateway(t, base)
	before := tokenMetric(t, base, metricMissing, "openai", "")
	for range 3 {
		if resp, body := g.do(key, "/openai/v1/models", ""); resp.StatusCode != 200 {
			t.Fatalf("GET /v1/models: %d %s", resp.StatusCode, body)
		}
	}
	if resp, _ := g.do(key, "/openai/v1/chat/completions", `{"model":"upstream-error","messages":[]}`); resp.StatusCode != 500 {
		t.Fatalf("upstream-error: %d", resp.StatusCode)
	}
	if resp, body := g.do(key, "/openai/v1/chat/completions", `{"model":"llama3","messages":[],"max_tokens":3}`); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	// Settlements run after the answer: wait for the one that counts.
	if resp, body := g.do(key, "/openai/v1/chat/completions", `{"model":"no-usage","messages":[],"max_tokens":3}`); resp.StatusCode != 200 {
		t.Fatalf("no-usage: %d %s", resp.StatusCode, body)
	}
	waitMetric(t, base, metricMissing, "openai", "", before+1, "after 3 GET /v1/models, an upstream error, a reported and an unreported chat answer")
	if resp, _ := g.do(key, "/openai/v1/models", ""); resp.StatusCode != 200 {
		t.Fatal("GET /v1/models")
	}
	waitMetric(t, base, metricMissing, "openai", "", before+1, "after another GET /v1/models")
}

// flushDiscard is a ResponseWriter that drops what it gets and can flush,
// for the benchmark below.
type flushDiscard struct{ h http.Header }

func (d flushDiscard) Header() http.Header         { return d.h }
func (d flushDiscard) Write(p []byte) (int, error) { return len(p), nil }
func (d flushDiscard) WriteHeader(int)             {}
func (d flushDiscard) Flush()                      {}

// BenchmarkTokenWriterChunk: what a streamed chunk costs on a route with
// tokens, written and flushed through the tokenWriter as reverse_proxy does
// (no allocation per chunk: the answer is not buffered).
func BenchmarkTokenWriterChunk(b *testing.B) {
	chunk := []byte("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"}}],\"usage\":null}\n\n")
	for _, hide := range []bool{false, true} {
		b.Run(fmt.Sprintf("hide=%v", hide), func(b *testing.B) {
			w := flushDiscard{h: http.Header{"Content-Type": {"text/event-stream"}}}
			tw := &tokenWriter{ResponseWriter: w, format: tokens.OpenAI, hide: hide}
			tw.WriteHeader(http.StatusOK)
			b.ReportAllocs()
			for b.Loop() {
				tw.Write(chunk)
				tw.Flush()
			}
		})
	}
}
