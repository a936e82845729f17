package apikey

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// tokenSite starts a gateway with two routes with tokens, /openai/* and
// /ollama/*, in front of up.
func tokenSite(t *testing.T, up *llmUpstream, keys string, extra string) string {
	t.Helper()
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%[1]d {
	handle_path /openai/* {
		apikey {
			keys file %[2]s
			service openai
			tokens openai
			failed_auth_limit off
			%[4]s
		}
		reverse_proxy %[3]s {
			flush_interval -1
		}
	}
	handle_path /ollama/* {
		apikey {
			keys file %[2]s
			service ollama
			tokens ollama
			failed_auth_limit off
			%[4]s
		}
		reverse_proxy %[3]s {
			flush_interval -1
		}
	}
}
`, port, keys, strings.TrimPrefix(up.URL, "http://"), extra))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

func post(t *testing.T, url, key, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

// TestTokenBudgetsSmoke: a reservation that does not fit is refused before
// the upstream; what is reported is charged; a client that did not ask for
// usage never sees the usage chunk.
func TestTokenBudgetsSmoke(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_tokens", Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(600), Models: []string{"llama3*"}})
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "default_max_tokens 100")

	resp, body := post(t, base+"/openai/v1/chat/completions", key.Secret, `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"max_tokens":50,"stream":true}`)
	if resp.StatusCode != 200 || strings.Contains(body, `"usage":{`) || !strings.Contains(body, "[DONE]") {
		t.Fatalf("stream: %d, usage chunk shown to a client that did not ask: %v", resp.StatusCode, strings.Contains(body, `"usage":{`))
	}
	if !up.lastUsage {
		t.Fatal("the gateway did not ask the upstream for usage")
	}
	pol := resp.Header.Get("RateLimit-Policy")
	if !strings.Contains(pol, `"tokens-daily";q=600;w=86400;apikey-unit=tokens`) {
		t.Errorf("RateLimit-Policy %q", pol)
	}
	resp, body = post(t, base+"/openai/v1/chat/completions", key.Secret, `{"model":"gpt-4o","messages":[]}`)
	if resp.StatusCode != 403 || !strings.Contains(body, `"reason":"model"`) {
		t.Fatalf("a model outside the list: %d %s", resp.StatusCode, body)
	}
	calls := up.calls.Load()
	resp, body = post(t, base+"/openai/v1/chat/completions", key.Secret, `{"model":"llama3","messages":[],"max_tokens":5000}`)
	if resp.StatusCode != 400 || !strings.Contains(body, "tokens_daily") || up.calls.Load() != calls {
		t.Fatalf("a reservation over the whole budget: %d %s; upstream calls %d→%d", resp.StatusCode, body, calls, up.calls.Load())
	}
	resp, body = post(t, base+"/ollama/api/chat", key.Secret, `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"eval_count":5`) {
		t.Fatalf("ollama stream: %d %s", resp.StatusCode, body)
	}
	time.Sleep(50 * time.Millisecond)
	resp, _ = post(t, base+"/ollama/api/generate", key.Secret, `{"model":"llama3","prompt":"x","stream":false}`)
	t.Logf("after: %s", resp.Header.Get("RateLimit"))
}

// Helpers shared by the token tests (serve_budgets_test.go, tokens_clients_test.go,
// tokens_cluster_test.go).

// tokenKey makes a dev writer key for every service with the given budgets.
func tokenKey(t *testing.T, id string, set func(*keystore.Record)) gatewaytest.Key {
	t.Helper()
	rec := keystore.Record{ID: id, Type: "dev", Role: "writer", Services: []string{"*"}}
	if set != nil {
		set(&rec)
	}
	return gatewaytest.NewKey(t, keystore.Dev, rec)
}

// reserveOf is what the gateway reserves for body with maxTokens (or the
// route's default_max_tokens): the limit plus one token per 4 bytes of body,
// rounded up (README, "How tokens are counted").
func reserveOf(body string, maxTokens int64) int64 {
	return maxTokens + (int64(len(body))+3)/4
}

// rateItem is the r= of the item name in a RateLimit field, e.g.
// "tokens-daily"; ok is false when the field has no such item.
func rateItem(h http.Header, name string) (int64, bool) {
	for _, item := range strings.Split(h.Get("RateLimit"), ",") {
		params := strings.Split(strings.TrimSpace(item), ";")
		if len(params) == 0 || params[0] != `"`+name+`"` {
			continue
		}
		for _, p := range params[1:] {
			if v, ok := strings.CutPrefix(p, "r="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// tokenGateway makes requests to a gateway with token routes for the tests,
// and checks on every admitted request that it was counted: its
// X-RateLimit-Remaining is one below the key's previous admitted request's
// (refusals in between must not count, and no admitted request may go
// uncounted).
type tokenGateway struct {
	t    *testing.T
	base string
	mu   sync.Mutex
	left map[string]int64 // the last X-RateLimit-Remaining per key id
}

func newTokenGateway(t *testing.T, base string) *tokenGateway {
	return &tokenGateway{t: t, base: base, left: map[string]int64{}}
}

// do sends one request (a POST when body is not "") and reads the whole
// answer.
func (g *tokenGateway) do(k gatewaytest.Key, path, body string) (*http.Response, string) {
	g.t.Helper()
	method, rd := http.MethodGet, io.Reader(nil)
	if body != "" {
		method, rd = http.MethodPost, strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, g.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s (key %s): %v", method, path, k.Record.ID, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s %s (key %s): reading the answer: %v", method, path, k.Record.ID, err)
	}
	if resp.StatusCode < 400 || resp.StatusCode == http.StatusInternalServerError { // 500: llmUpstream's upstream-error
		g.admitted(k, resp)
	}
	return resp, string(data)
}

// admitted checks that resp, the answer to a request that reached the
// upstream, was counted.
func (g *tokenGateway) admitted(k gatewaytest.Key, resp *http.Response) {
	g.t.Helper()
	v := resp.Header.Get("X-RateLimit-Remaining")
	g.admittedRemaining(k, resp.StatusCode, &v)
}

// admittedRemaining is admitted for a request made elsewhere (an SDK):
// status and X-RateLimit-Remaining (nil when absent).
func (g *tokenGateway) admittedRemaining(k gatewaytest.Key, status int, remaining *string) {
	g.t.Helper()
	v := ""
	if remaining != nil {
		v = *remaining
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		g.t.Errorf("key %s: an admitted request (%d) has X-RateLimit-Remaining %q: uncounted?", k.Record.ID, status, v)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if prev, ok := g.left[k.Record.ID]; ok && n != prev-1 {
		g.t.Errorf("key %s: X-RateLimit-Remaining went %d -> %d over one admitted request, want %d", k.Record.ID, prev, n, prev-1)
	}
	g.left[k.Record.ID] = n
}

// tokensLeft is the key's daily token budget left, read from a request
// that reserves nothing (GET /openai/v1/models has no body).
func (g *tokenGateway) tokensLeft(k gatewaytest.Key) int64 {
	g.t.Helper()
	resp, _ := g.do(k, "/openai/v1/models", "")
	n, ok := rateItem(resp.Header, "tokens-daily")
	if !ok {
		g.t.Fatalf("key %s: no tokens-daily item in RateLimit %q", k.Record.ID, resp.Header.Get("RateLimit"))
	}
	return n
}

// waitTokensLeft waits until the key's daily budget left is want: a
// settlement runs once the answer has been written, so just after the
// client read it the reservation may still stand.
func (g *tokenGateway) waitTokensLeft(k gatewaytest.Key, want int64, what string) {
	g.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	var seen []int64
	for {
		n := g.tokensLeft(k)
		if n == want {
			return
		}
		if len(seen) == 0 || seen[len(seen)-1] != n {
			seen = append(seen, n)
		}
		if time.Now().After(deadline) {
			g.t.Errorf("key %s, %s: daily tokens left %d (seen %v), want %d", k.Record.ID, what, n, seen, want)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkOpenAIRefusal checks a refusal body in the openai error format:
// {"error":{"message","type","param":null,"code","reason"}}.
func checkOpenAIRefusal(t *testing.T, what, body, typ, code, reason string) {
	t.Helper()
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == nil {
		t.Errorf("%s: not an openai error body: %s", what, body)
		return
	}
	str := func(name string) string {
		var s string
		json.Unmarshal(e.Error[name], &s)
		return s
	}
	if str("message") == "" || (typ != "" && str("type") != typ) || str("code") != code || str("reason") != reason ||
		string(e.Error["param"]) != "null" {
		t.Errorf("%s: body %s, want type %q, code %q, reason %q, a message and param null", what, body, typ, code, reason)
	}
}

// streamLines sends a streamed request and reads its answer line by line,
// noting when each non-empty line arrived (after the request was sent).
type streamLine struct {
	at   time.Duration
	text string
}

func streamRequest(t *testing.T, url string, k gatewaytest.Key, body string) (*http.Response, []streamLine) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatalf("key %s: %v", k.Record.ID, err)
	}
	defer resp.Body.Close()
	var lines []streamLine
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			lines = append(lines, streamLine{time.Since(start), s})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("key %s: reading the stream: %v", k.Record.ID, err)
	}
	return resp, lines
}

// TestTokenStreamsIncremental: through a route with tokens, streamed answers
// still arrive chunk by chunk (the gateway reads usage as it passes and
// holds nothing back but the usage chunk it hides), for OpenAI's event
// stream and Ollama's NDJSON; and what is charged is what was reported.
func TestTokenStreamsIncremental(t *testing.T) {
	const gap = 200 * time.Millisecond
	const chunks = 5 // the upstream's completion: 5 chunks of "tok "
	up := newLLMUpstream(t, gap)
	key := tokenKey(t, "k_stream", func(r *keystore.Record) { r.TokensPerDay = int64p(100000) })
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "")
	g := newTokenGateway(t, base)

	check := func(name string, lines []streamLine, content func(string) bool) {
		t.Helper()
		var got []time.Duration
		for _, l := range lines {
			if content(l.text) {
				got = append(got, l.at)
			}
		}
		if len(got) != chunks {
			t.Errorf("%s: %d content chunks, want %d: %v", name, len(got), chunks, lines)
			return
		}
		end := lines[len(lines)-1].at
		t.Logf("%s: content chunks at %v, end at %v", name, got, end)
		if got[0] >= 2*gap {
			t.Errorf("%s: the first chunk came %v after the request, want < %v: buffered?", name, got[0], 2*gap)
		}
		// The upstream sends them (chunks-1)*gap apart; a quarter of that
		// is left for scheduling jitter on the first one.
		if spread, want := got[len(got)-1]-got[0], (chunks-1)*gap*3/4; spread < want {
			t.Errorf("%s: chunks spread over %v, want ≥ %v: not incremental", name, spread, want)
		}
		if end < chunks*gap {
			t.Errorf("%s: the answer ended %v after the request, want ≥ %v", name, end, chunks*gap)
		}
	}
	openaiContent := func(s string) bool { return strings.Contains(s, `"content":"tok "`) }

	// OpenAI, the client did not ask for usage: the gateway asks, and hides
	// the usage chunk.
	body := `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"stream":true}`
	resp, lines := streamRequest(t, base+"/openai/v1/chat/completions", key, body)
	g.admitted(key, resp)
	if resp.StatusCode != 200 || !up.lastUsage {
		t.Fatalf("openai stream: %d, gateway asked for usage: %v", resp.StatusCode, up.lastUsage)
	}
	for _, l := range lines {
		if strings.Contains(l.text, `"usage":{`) || strings.Contains(l.text, `"choices":[]`) {
			t.Errorf("openai stream: the client did not ask for usage and got %s", l.text)
		}
	}
	if lines[len(lines)-1].text != "data: [DONE]" {
		t.Errorf("openai stream: last line %q, want data: [DONE]", lines[len(lines)-1].text)
	}
	check("openai stream (usage hidden)", lines, openaiContent)
	g.waitTokensLeft(key, 100000-up.total(), "after the openai stream")

	// OpenAI, the client asked for usage: exactly one usage chunk, the
	// upstream's.
	body = `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
	resp, lines = streamRequest(t, base+"/openai/v1/chat/completions", key, body)
	g.admitted(key, resp)
	prompt, completion := up.last()
	want := fmt.Sprintf(`"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, prompt, completion, prompt+completion)
	usageChunks := 0
	for _, l := range lines {
		if strings.Contains(l.text, `"usage":{`) {
			usageChunks++
			if !strings.Contains(l.text, want) {
				t.Errorf("openai stream with usage: %s, want %s", l.text, want)
			}
		}
	}
	if usageChunks != 1 {
		t.Errorf("openai stream with usage: %d usage chunks, want 1", usageChunks)
	}
	check("openai stream (usage asked)", lines, openaiContent)
	g.waitTokensLeft(key, 100000-up.total(), "after the openai stream with usage")

	// Ollama NDJSON, chat and generate.
	for _, c := range []struct{ path, body, content string }{
		{"/ollama/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`, `"content":"tok "`},
		{"/ollama/api/generate", `{"model":"llama3","prompt":"hi"}`, `"response":"tok "`},
	} {
		resp, lines = streamRequest(t, base+c.path, key, c.body)
		g.admitted(key, resp)
		if resp.StatusCode != 200 || !strings.Contains(lines[len(lines)-1].text, `"done":true`) {
			t.Fatalf("%s: %d, last line %v", c.path, resp.StatusCode, lines[len(lines)-1])
		}
		check("ollama "+c.path, lines, func(s string) bool { return strings.Contains(s, c.content) })
		g.waitTokensLeft(key, 100000-up.total(), "after "+c.path)
	}
}

// TestTokenReserveSettle: a reservation that does not fit is refused (429,
// the budget's reason, in the route's error format; 400 when it is larger
// than the whole budget, which no retry can pass) before the upstream;
// one that fits is charged at once and settled to what the upstream
// reported; a stream the client cuts is charged its reservation; the
// model allowlist and a model's own budget.
func TestTokenReserveSettle(t *testing.T) {
	up := newLLMUpstream(t, 0)
	daily := tokenKey(t, "k_daily", func(r *keystore.Record) { r.TokensPerDay = int64p(1000) })
	minute := tokenKey(t, "k_minute", func(r *keystore.Record) { r.TokensPerMinute = int64p(300) })
	model := tokenKey(t, "k_model", func(r *keystore.Record) {
		r.TokensPerDay = int64p(100000)
		r.ModelTokensPerDay = map[string]int64{"gpt-4*": 150}
	})
	allow := tokenKey(t, "k_allow", func(r *keystore.Record) { r.Models = []string{"llama3*"}; r.TokensPerDay = int64p(1000) })
	cut := tokenKey(t, "k_cut", func(r *keystore.Record) { r.TokensPerDay = int64p(10000) })
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, daily.Record, minute.Record, model.Record, allow.Record, cut.Record), "")
	g := newTokenGateway(t, base)
	const chat = "/openai/v1/chat/completions"
	msg := func(model string, maxTokens int64, extra string) string {
		return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"max_tokens":%d%s}`, model, maxTokens, extra)
	}
	refused := func(what string, k gatewaytest.Key, body, reason string, final bool) *http.Response {
		t.Helper()
		calls := up.calls.Load()
		resp, got := g.do(k, chat, body)
		if resp.StatusCode != 429 {
			t.Errorf("%s (key %s): %d %s, want 429 %s", what, k.Record.ID, resp.StatusCode, got, reason)
			return resp
		}
		if n := up.calls.Load(); n != calls {
			t.Errorf("%s: the upstream was called (%d -> %d calls)", what, calls, n)
		}
		checkOpenAIRefusal(t, what, got, "rate_limit_error", "quota_exceeded", reason)
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 86400 || (!final && ra > 60) {
			t.Errorf("%s: Retry-After %q", what, resp.Header.Get("Retry-After"))
		}
		if sr := resp.Header.Get("X-Should-Retry"); (sr == "false") != final {
			t.Errorf("%s: X-Should-Retry %q (a daily budget: %v)", what, sr, final)
		}
		return resp
	}
	// tooLarge: a reservation larger than a whole budget, which no retry
	// can pass, is 400 invalid_request_error with the budget's reason and
	// no Retry-After, which no client library retries.
	tooLarge := func(what string, k gatewaytest.Key, body, reason string) *http.Response {
		t.Helper()
		calls := up.calls.Load()
		resp, got := g.do(k, chat, body)
		if resp.StatusCode != 400 {
			t.Errorf("%s (key %s): %d %s, want 400 %s", what, k.Record.ID, resp.StatusCode, got, reason)
			return resp
		}
		if n := up.calls.Load(); n != calls {
			t.Errorf("%s: the upstream was called (%d -> %d calls)", what, calls, n)
		}
		checkOpenAIRefusal(t, what, got, "invalid_request_error", "invalid_request", reason)
		if ra := resp.Header.Get("Retry-After"); ra != "" || resp.Header.Get("X-Should-Retry") != "false" {
			t.Errorf("%s: Retry-After %q, X-Should-Retry %q", what, ra, resp.Header.Get("X-Should-Retry"))
		}
		return resp
	}

	t.Run("daily", func(t *testing.T) {
		if n := g.tokensLeft(daily); n != 1000 {
			t.Fatalf("a new key has %d tokens left, want 1000", n)
		}
		// More than the whole budget.
		resp := tooLarge("over the whole budget", daily, msg("llama3", 2000, ""), "tokens_daily")
		if n, _ := rateItem(resp.Header, "tokens-daily"); n != 1000 {
			t.Errorf("a refused reservation charged something: %d left, want 1000", n)
		}

		// A stream holds its reservation while it runs: another request
		// that fits the budget but not what is left is refused.
		up.setGap(100 * time.Millisecond)
		defer up.setGap(0)
		held := msg("llama3", 700, `,"stream":true,"stream_options":{"include_usage":true}`)
		req, _ := http.NewRequest(http.MethodPost, base+chat, strings.NewReader(held))
		req.Header.Set("Authorization", "Bearer "+daily.Secret)
		stream, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		g.admitted(daily, stream)
		if n, _ := rateItem(stream.Header, "tokens-daily"); n != 1000-reserveOf(held, 700) {
			t.Errorf("the stream's RateLimit says %d left, want 1000 - its reservation %d", n, reserveOf(held, 700))
		}
		before := up.total()
		refused("over what a running stream left", daily, msg("llama3", 400, ""), "tokens_daily", true)
		io.Copy(io.Discard, stream.Body)
		stream.Body.Close()
		reported := up.total() - before
		if reported <= 0 || reported >= reserveOf(held, 700) {
			t.Fatalf("the upstream reported %d for a reservation of %d: the test needs 0 < reported < reserved", reported, reserveOf(held, 700))
		}
		g.waitTokensLeft(daily, 1000-reported, "after the stream settled (limit - reported, not - reserved)")

		// The budget freed by the settlement is usable at once.
		body := msg("llama3", 400, "")
		before = up.total()
		resp, got := g.do(daily, chat, body)
		if resp.StatusCode != 200 {
			t.Fatalf("after settlement: %d %s", resp.StatusCode, got)
		}
		if n, _ := rateItem(resp.Header, "tokens-daily"); n != 1000-reported-reserveOf(body, 400) {
			t.Errorf("RateLimit says %d left, want %d", n, 1000-reported-reserveOf(body, 400))
		}
		reported += up.total() - before
		g.waitTokensLeft(daily, 1000-reported, "after a plain answer settled")
	})

	t.Run("minute", func(t *testing.T) {
		// Larger than the whole per-minute budget: no retry can pass.
		tooLarge("over the per-minute budget", minute, msg("llama3", 500, ""), "tokens_minute")
		if s := time.Now().Second(); s >= 55 {
			time.Sleep(time.Duration(61-s) * time.Second) // stay in one minute
		}
		body := msg("llama3", 200, "")
		resp, got := g.do(minute, chat, body)
		if resp.StatusCode != 200 {
			t.Fatalf("within the per-minute budget: %d %s", resp.StatusCode, got)
		}
		if n, ok := rateItem(resp.Header, "tokens-minute"); !ok || n != 300-reserveOf(body, 200) {
			t.Errorf("tokens-minute r=%d (%v), want %d", n, ok, 300-reserveOf(body, 200))
		}
		if _, ok := rateItem(resp.Header, "tokens-daily"); ok {
			t.Errorf("a key with no daily token budget shows one: %s", resp.Header.Get("RateLimit"))
		}
	})

	t.Run("model budget", func(t *testing.T) {
		// gpt-4* has 150 tokens a day: gpt-4o is held to them, llama3 is not.
		start := up.total()
		tooLarge("gpt-4o over its whole model budget", model, msg("gpt-4o", 200, ""), "tokens_model")
		calls := up.calls.Load()
		resp, got := g.do(model, chat, msg("llama3", 200, ""))
		if resp.StatusCode != 200 || up.calls.Load() != calls+1 {
			t.Fatalf("llama3 is not under gpt-4*'s budget: %d %s", resp.StatusCode, got)
		}
		if _, ok := rateItem(resp.Header, "tokens-model"); ok {
			t.Errorf("llama3's answer shows a model budget: %s", resp.Header.Get("RateLimit"))
		}
		first := msg("gpt-4o", 50, "")
		before := up.total()
		resp, got = g.do(model, chat, first)
		if resp.StatusCode != 200 {
			t.Fatalf("gpt-4o within its budget: %d %s", resp.StatusCode, got)
		}
		if n, ok := rateItem(resp.Header, "tokens-model"); !ok || n != 150-reserveOf(first, 50) {
			t.Errorf("gpt-4o: tokens-model r=%d (%v), want %d", n, ok, 150-reserveOf(first, 50))
		}
		reported := up.total() - before
		g.waitTokensLeft(model, 100000-(up.total()-start), "after gpt-4o settled")
		// The model's counter settled too: the next gpt-4o request sees
		// 150 - reported - its own reservation.
		second := msg("gpt-4-turbo", 50, "")
		resp, got = g.do(model, chat, second)
		if resp.StatusCode != 200 {
			t.Fatalf("gpt-4-turbo: %d %s", resp.StatusCode, got)
		}
		if n, _ := rateItem(resp.Header, "tokens-model"); n != 150-reported-reserveOf(second, 50) {
			t.Errorf("gpt-4-turbo (same gpt-4* budget): tokens-model r=%d, want 150 - %d reported - %d reserved = %d",
				n, reported, reserveOf(second, 50), 150-reported-reserveOf(second, 50))
		}
	})

	t.Run("model allowlist", func(t *testing.T) {
		calls := up.calls.Load()
		resp, got := g.do(allow, chat, msg("gpt-4o", 10, ""))
		if resp.StatusCode != 403 || up.calls.Load() != calls {
			t.Fatalf("a model outside the list: %d %s; upstream calls %d -> %d", resp.StatusCode, got, calls, up.calls.Load())
		}
		checkOpenAIRefusal(t, "model outside the list", got, "permission_error", "forbidden", "model")
		if n := g.tokensLeft(allow); n != 1000 {
			t.Errorf("a request refused for its model charged tokens: %d left", n)
		}
		resp, got = g.do(allow, chat, msg("llama3-8b", 10, ""))
		if resp.StatusCode != 200 {
			t.Fatalf("llama3-8b matches llama3*: %d %s", resp.StatusCode, got)
		}
	})

	t.Run("cut stream", func(t *testing.T) {
		// A client that goes away mid-stream: the upstream never reported,
		// so the reservation stays charged.
		up.setGap(100 * time.Millisecond)
		defer up.setGap(0)
		charged := int64(0)
		for _, c := range []struct{ path, body string }{
			{chat, msg("llama3", 50, `,"stream":true,"stream_options":{"include_usage":true}`)},
			{"/ollama/api/chat", `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":50}}`},
		} {
			reported, cuts := up.total(), up.cut.Load()
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+c.path, strings.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+cut.Secret)
			resp, err := gatewaytest.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			g.admitted(cut, resp)
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.Contains(line, "tok ") {
				t.Fatalf("%s: first line %q, %v", c.path, line, err)
			}
			cancel()
			resp.Body.Close()
			deadline := time.Now().Add(3 * time.Second)
			for up.cut.Load() == cuts && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if up.cut.Load() == cuts || up.total() != reported {
				t.Fatalf("%s: the upstream did not see the client go (cuts %d, reported %d -> %d)", c.path, up.cut.Load(), reported, up.total())
			}
			charged += reserveOf(c.body, 50)
			g.waitTokensLeft(cut, 10000-charged, "after a cut "+c.path+" (its reservation stays charged)")
		}
	})
}

// TestTokenBadInput: bodies the route cannot use are refused before the
// upstream; odd upstream answers are charged as the README says; every
// admitted request is counted (tokenGateway checks X-RateLimit-Remaining).
func TestTokenBadInput(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := tokenKey(t, "k_bad", func(r *keystore.Record) { r.TokensPerDay = int64p(1_000_000) })
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "max_request_body 2048\n\t\t\tdefault_max_tokens 100")
	g := newTokenGateway(t, base)
	const chat = "/openai/v1/chat/completions"
	charged := int64(0)
	settled := func(what string) {
		t.Helper()
		g.waitTokensLeft(key, 1_000_000-charged, what)
	}
	refusedBody := func(what, path, body string, status int, reason string) {
		t.Helper()
		calls := up.calls.Load()
		resp, got := g.do(key, path, body)
		if resp.StatusCode != status || !strings.Contains(got, `"code":"invalid_request"`) || !strings.Contains(got, `"reason":"`+reason+`"`) {
			t.Errorf("%s: %d %s, want %d invalid_request %s", what, resp.StatusCode, got, status, reason)
		}
		if up.calls.Load() != calls {
			t.Errorf("%s: the upstream was called", what)
		}
		if strings.Contains(got, "not json at all") {
			t.Errorf("%s: the refusal quotes the body: %s", what, got)
		}
	}

	refusedBody("not JSON", chat, "not json at all", 400, "body")
	refusedBody("not JSON (ollama)", "/ollama/api/chat", "not json at all", 400, "body")
	refusedBody("a model that is not a string", chat, `{"model":5,"messages":[]}`, 400, "body")
	refusedBody("a JSON array", chat, `[{"model":"llama3"}]`, 400, "body")
	settled("after the refusals (nothing charged)")

	// No model, for a key without a models list: passes, and is charged
	// what was reported.
	before := up.total()
	resp, got := g.do(key, chat, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":3}`)
	if resp.StatusCode != 200 || up.total() == before {
		t.Fatalf("a body with no model: %d %s", resp.StatusCode, got)
	}
	charged += up.total() - before
	settled("after a body with no model")

	// max_request_body 2048: exactly 2048 bytes are read, 2049 are refused.
	sized := func(n int) string {
		head, tail := `{"model":"llama3","max_tokens":3,"messages":[{"role":"user","content":"`, `"}]}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	before = up.total()
	if resp, got := g.do(key, chat, sized(2048)); resp.StatusCode != 200 {
		t.Fatalf("a body of exactly max_request_body: %d %s", resp.StatusCode, got)
	}
	charged += up.total() - before
	refusedBody("a body over max_request_body", chat, sized(2049), 413, "body_too_large")
	refusedBody("a body far over max_request_body", "/ollama/api/generate", sized(100_000), 413, "body_too_large")
	settled("after the body sizes")

	// Odd answers. An answer with no usage at all (an upstream that does
	// not report, or one that dropped the field): the gateway cannot know
	// what was used, so the reservation is charged — never nothing, which
	// would make such an upstream free. An impossible report (negative, or
	// over tokens.MaxReported) is not believed either: the reservation is
	// charged, and the gateway goes on serving.
	for _, c := range []struct{ what, path, body string }{
		{"openai, no usage", chat, `{"model":"no-usage","messages":[],"max_tokens":7}`},
		{"openai stream asking usage, none sent", chat, `{"model":"no-usage","messages":[],"max_tokens":7,"stream":true,"stream_options":{"include_usage":true}}`},
		{"openai stream, usage hidden, none sent", chat, `{"model":"no-usage","messages":[],"max_tokens":7,"stream":true}`},
		{"ollama, no counts", "/ollama/api/generate", `{"model":"no-usage","prompt":"x","stream":false}`},
		{"ollama stream, no counts", "/ollama/api/chat", `{"model":"no-usage","messages":[]}`},
		{"openai, negative usage", chat, `{"model":"absurd-negative","messages":[],"max_tokens":7}`},
		{"openai stream, 1e12 usage", chat, `{"model":"absurd-huge","messages":[],"max_tokens":7,"stream":true,"stream_options":{"include_usage":true}}`},
		{"ollama, negative counts", "/ollama/api/generate", `{"model":"absurd-negative","prompt":"x","stream":false}`},
		{"ollama stream, 1e12 counts", "/ollama/api/chat", `{"model":"absurd-huge","messages":[]}`},
	} {
		before := up.total()
		resp, got := g.do(key, c.path, c.body)
		if resp.StatusCode != 200 || !strings.Contains(got, "tok") {
			t.Fatalf("%s: %d %s", c.what, resp.StatusCode, got)
		}
		if up.total() != before {
			t.Fatalf("%s: the upstream counted a report", c.what)
		}
		var max int64 = 100 // default_max_tokens
		if strings.Contains(c.body, `"max_tokens":7`) {
			max = 7
		}
		body := c.body
		if strings.Contains(body, `"stream":true}`) {
			// The gateway added "stream_options":{"include_usage":true}
			// (and json.Marshal sorted the fields): the reservation counts
			// the body it sent.
			body = strings.TrimSuffix(body, "}") + `,"stream_options":{"include_usage":true}}`
		}
		charged += reserveOf(body, max)
		settled(c.what + " (charged the reservation)")
	}

	// An upstream error that reports nothing is charged nothing.
	resp, got = g.do(key, chat, `{"model":"upstream-error","messages":[],"max_tokens":7}`)
	if resp.StatusCode != 500 || !strings.Contains(got, "the model crashed") {
		t.Fatalf("an upstream error: %d %s", resp.StatusCode, got)
	}
	settled("after an upstream error (charged nothing)")
}

// TestTokenHugeMaxTokens: a request whose limit is past anything a budget
// could hold is just over the budget: 400 tokens_daily ("ask for fewer with
// max_tokens"), never reaching the upstream, not a 503 "unavailable" that
// SDKs retry and that reads as a key service failure. 2^53-1 is
// JavaScript's Number.MAX_SAFE_INTEGER, an "unlimited" some clients send:
// with the prompt estimate it is past what the stores count exactly
// (ratelimit.checkTokens); MaxInt64 plus the prompt estimate overflows
// int64 to a negative reservation.
func TestTokenHugeMaxTokens(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := tokenKey(t, "k_huge", func(r *keystore.Record) { r.TokensPerDay = int64p(1000) })
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "")
	g := newTokenGateway(t, base)
	for _, c := range []struct{ path, body string }{
		{"/openai/v1/chat/completions", `{"model":"llama3","messages":[],"max_tokens":9007199254740991}`},
		{"/openai/v1/chat/completions", fmt.Sprintf(`{"model":"llama3","messages":[],"max_completion_tokens":%d}`, int64(math.MaxInt64))},
		{"/ollama/api/generate", `{"model":"llama3","prompt":"x","options":{"num_predict":9007199254740991}}`},
	} {
		resp, got := g.do(key, c.path, c.body)
		if resp.StatusCode != 400 || !strings.Contains(got, `"reason":"tokens_daily"`) {
			t.Errorf("%s %s: %d %s, want 400 tokens_daily", c.path, c.body, resp.StatusCode, got)
		}
		if resp.StatusCode == 400 && resp.Header.Get("X-Should-Retry") != "false" {
			t.Errorf("%s: X-Should-Retry %q", c.path, resp.Header.Get("X-Should-Retry"))
		}
	}
	if up.calls.Load() != 0 {
		t.Errorf("the upstream was called %d times", up.calls.Load())
	}
	if n := g.tokensLeft(key); n != 1000 {
		t.Errorf("%d tokens left, want 1000", n)
	}
}

// TestTokenBodyOverTheLimitRefusedUnread: a body whose Content-Length is
// over max_request_body gets 413 at once, before any of it is read: a
// client that declares a large body and sends a few bytes does not hold the
// request open (before, the method-override check waited for the body's
// first 64 KiB, then the read deadline, 30 s).
func TestTokenBodyOverTheLimitRefusedUnread(t *testing.T) {
	up := newLLMUpstream(t, 0)
	key := tokenKey(t, "k_big_body", func(r *keystore.Record) { r.TokensPerDay = int64p(1_000_000) })
	g := newTokenGateway(t, tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "max_request_body 1048576"))
	u, _ := url.Parse(g.base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000000\r\n\r\n_method=GE", u.Host, key.Secret)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: no answer within 10 s to a body declared over max_request_body: %v", key.Record.ID, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.Contains(string(body), `"reason":"body_too_large"`) {
		t.Fatalf("%s: %d %s, want 413 body_too_large", key.Record.ID, resp.StatusCode, body)
	}
	if up.calls.Load() != 0 {
		t.Fatal("the upstream was called")
	}
}
