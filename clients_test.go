package apikey

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/testtools"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// The real-client test drives the gateway with the official JavaScript SDKs,
// npm's openai and ollama, run by Node from testdata/clients (see its
// package.json for the pinned versions). CI installs both; elsewhere the test
// is skipped with one line saying how to install them, unless
// APIKEY_REQUIRE_NODE is set, which makes their absence a failure.
//
// openai 7 declares Node >= 22 in its package.json; Debian's Node 20 runs all
// this test uses (npm ci warns EBADENGINE).

const (
	clientsDir       = "testdata/clients"
	clientChunks     = 5               // content chunks per streamed answer
	clientAckWait    = 5 * time.Second // how long the upstream waits for the client to have a chunk
	openaiUpstreamTk = "openai-upstream-token-0003"
	ollamaUpstreamTk = "ollama-upstream-token-0004"
)

// requireClients returns the node binary, or skips (fails under
// APIKEY_REQUIRE_NODE) when node or the npm packages are missing.
func requireClients(t *testing.T) string {
	t.Helper()
	const install = "cd testdata/clients && npm ci --no-audit --no-fund"
	node := testtools.Require(t, "node", "APIKEY_REQUIRE_NODE", "apt-get install nodejs npm, then "+install)
	for _, pkg := range []string{"openai", "ollama"} {
		if _, err := os.Stat(filepath.Join(clientsDir, "node_modules", pkg, "package.json")); err != nil {
			testtools.Missing(t, "the npm packages in "+clientsDir, "APIKEY_REQUIRE_NODE",
				fmt.Sprintf("npm package %s is not installed in %s/node_modules (%s)", pkg, clientsDir, install))
		}
	}
	return node
}

// streamLog records when a streaming upstream flushed each chunk of the
// answer to one model name (models name the test steps), and the client's
// word that it has each chunk.
type streamLog struct {
	mu      sync.Mutex
	sent    map[string][]time.Time
	calls   map[string]int           // requests per model
	auth    map[string]string        // the Authorization header the upstream last saw, per model
	acks    map[string]chan struct{} // one token per chunk the client has, per model
	stalled map[string]int           // the chunk the client never said it had, per model
}

func newStreamLog() *streamLog {
	return &streamLog{sent: map[string][]time.Time{}, calls: map[string]int{}, auth: map[string]string{},
		acks: map[string]chan struct{}{}, stalled: map[string]int{}}
}

// ackServer takes the clients' word that they have a chunk (POST
// /?model=…), straight from the client, not through the gateway.
func (l *streamLog) ackServer(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case l.ackChan(r.URL.Query().Get("model")) <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.Close)
	return s
}

func (l *streamLog) ackChan(model string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.acks[model]
	if !ok {
		c = make(chan struct{}, clientChunks)
		l.acks[model] = c
	}
	return c
}

// stall records that the client did not say it had chunk i.
func (l *streamLog) stall(model string, i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stalled[model] = i
}

func (l *streamLog) stalledAt(model string) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.stalled[model]
	return i, ok
}

func (l *streamLog) called(model, auth string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[model]++
	l.auth[model] = auth
}

func (l *streamLog) flushed(model string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[model] = append(l.sent[model], time.Now())
}

func (l *streamLog) count(model string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[model]
}

func (l *streamLog) sends(model string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.sent[model]...)
}

// streamChunks writes the chunks one at a time, flushing each, then the
// closing ones. It writes a chunk only once the client has said it has the
// one before (the step's ack): through a gateway that held the answer back,
// whole or in part, that word could not come. After clientAckWait without
// it, the stall is recorded and the rest is sent at once.
func streamChunks(w http.ResponseWriter, r *http.Request, log *streamLog, model string, chunk func(i int) string, closing ...string) {
	flusher := w.(http.Flusher)
	acks, stalled := log.ackChan(model), false
	for i := range clientChunks {
		if i > 0 && !stalled {
			select {
			case <-acks:
			case <-time.After(clientAckWait):
				log.stall(model, i-1)
				stalled = true
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, chunk(i))
		flusher.Flush()
		log.flushed(model)
	}
	for _, c := range closing {
		io.WriteString(w, c)
	}
	flusher.Flush()
}

func clientTokens(i int) string { return fmt.Sprintf("tok%d ", i) }

func clientAnswer() string {
	var b strings.Builder
	for i := range clientChunks {
		b.WriteString(clientTokens(i))
	}
	return b.String()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// newOpenAIUpstream answers POST /v1/chat/completions like OpenAI: a
// chat.completion, or with "stream": true server-sent chat.completion.chunk
// events and "data: [DONE]".
func newOpenAIUpstream(t *testing.T, log *streamLog) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, `{"error":{"message":"unexpected request","type":"invalid_request_error","param":null,"code":null}}`, http.StatusBadRequest)
			return
		}
		log.called(req.Model, r.Header.Get("Authorization"))
		created := time.Now().Unix()
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"chatcmpl-test","object":"chat.completion","created":%d,"model":%s,`+
				`"choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],`+
				`"usage":{"prompt_tokens":2,"completion_tokens":%d,"total_tokens":%d}}`,
				created, jsonString(req.Model), jsonString(clientAnswer()), clientChunks, clientChunks+2)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		event := func(delta, finish string) string {
			return fmt.Sprintf("data: {\"id\":\"chatcmpl-test\",\"object\":\"chat.completion.chunk\",\"created\":%d,\"model\":%s,"+
				"\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":%s}]}\n\n", created, jsonString(req.Model), delta, finish)
		}
		streamChunks(w, r, log, req.Model,
			func(i int) string { return event(`{"content":`+jsonString(clientTokens(i))+`}`, "null") },
			event(`{}`, `"stop"`), "data: [DONE]\n\n")
	}))
	t.Cleanup(s.Close)
	return s
}

// newOllamaUpstream answers POST /api/chat and /api/generate like Ollama:
// NDJSON lines ending with one that says "done": true, or with "stream":
// false one JSON object.
func newOllamaUpstream(t *testing.T, log *streamLog) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model  string `json:"model"`
			Stream *bool  `json:"stream"`
		}
		chat := r.URL.Path == "/api/chat"
		if r.Method != http.MethodPost || !chat && r.URL.Path != "/api/generate" || json.NewDecoder(r.Body).Decode(&req) != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"unexpected request"}`)
			return
		}
		log.called(req.Model, r.Header.Get("Authorization"))
		line := func(content string, done bool) string {
			at := jsonString(time.Now().UTC().Format(time.RFC3339Nano))
			tail := `"done":false}`
			if done {
				tail = `"done":true,"done_reason":"stop","total_duration":1000,"eval_count":` + strconv.Itoa(clientChunks) + `}`
			}
			if chat {
				return `{"model":` + jsonString(req.Model) + `,"created_at":` + at +
					`,"message":{"role":"assistant","content":` + jsonString(content) + `},` + tail + "\n"
			}
			return `{"model":` + jsonString(req.Model) + `,"created_at":` + at + `,"response":` + jsonString(content) + `,` + tail + "\n"
		}
		if req.Stream != nil && !*req.Stream { // Ollama streams unless told not to
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			io.WriteString(w, line(clientAnswer(), true))
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		streamChunks(w, r, log, req.Model, func(i int) string { return line(clientTokens(i), false) }, line("", true))
	}))
	t.Cleanup(s.Close)
	return s
}

// clientStep is one SDK call made by a Node script; see testdata/clients/lib.mjs.
type clientStep struct {
	Name       string `json:"name"`
	Base       string `json:"base"`
	Key        string `json:"key"`
	Op         string `json:"op"`
	Model      string `json:"model"`
	MaxRetries *int   `json:"max_retries,omitempty"`
	// Ack is where the client says it has a streamed chunk (POSTed after
	// each), before it reads the next.
	Ack string `json:"ack,omitempty"`
}

type clientAttempt struct {
	Sent         float64 `json:"sent"`
	Answered     float64 `json:"answered"` // when the answer (a refusal's body too) was in
	Status       int     `json:"status"`
	ContentType  string  `json:"content_type"`
	RetryAfter   *string `json:"retry_after"`
	RetryAfterMs *string `json:"retry_after_ms"`
	ShouldRetry  *string `json:"should_retry"`
	Body         string  `json:"body"`
}

type clientResult struct {
	Name     string          `json:"name"`
	Start    float64         `json:"start"`
	End      float64         `json:"end"`
	OK       bool            `json:"ok"`
	Content  string          `json:"content"`
	Attempts []clientAttempt `json:"attempts"`
	Chunks   []struct {
		T    float64 `json:"t"`
		Text string  `json:"text"`
	} `json:"chunks"`
	Error *struct {
		Name       string          `json:"name"`
		Message    string          `json:"message"`
		Status     int             `json:"status"`
		StatusCode int             `json:"status_code"`
		Code       *string         `json:"code"`
		Type       *string         `json:"type"`
		HasParam   bool            `json:"has_param"`
		Param      json.RawMessage `json:"param"`
		Error      json.RawMessage `json:"error"`
	} `json:"error"`
}

// msTime turns a Node wall-clock reading (milliseconds) into a time.Time.
func msTime(ms float64) time.Time { return time.UnixMicro(int64(ms * 1000)) }

// runClient runs a Node script with the steps on standard input and returns
// its results by step name. Keys are replaced by their ids in anything it
// prints.
func runClient(t *testing.T, node, script string, redact *strings.Replacer, steps []clientStep) map[string]clientResult {
	t.Helper()
	plan, err := json.Marshal(map[string]any{"steps": steps})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = clientsDir
	cmd.Stdin = bytes.NewReader(plan)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v\nstdout: %s\nstderr: %s", script, err, redact.Replace(stdout.String()), redact.Replace(stderr.String()))
	}
	var out struct {
		Node    string         `json:"node"`
		SDK     string         `json:"sdk"`
		Results []clientResult `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("node %s: output is not JSON: %v\n%s\nstderr: %s", script, err, redact.Replace(stdout.String()), redact.Replace(stderr.String()))
	}
	if len(out.Results) != len(steps) {
		t.Fatalf("node %s: %d results for %d steps", script, len(out.Results), len(steps))
	}
	t.Logf("%s on node %s", out.SDK, out.Node)
	byName := map[string]clientResult{}
	for _, r := range out.Results {
		byName[r.Name] = r
	}
	return byName
}

// describe prints a result for a failure message, without keys.
func describe(redact *strings.Replacer, r clientResult) string {
	b, _ := json.Marshal(r)
	return redact.Replace(string(b))
}

// checkStream asserts that a streamed answer arrived whole and chunk by
// chunk: the client had each chunk before the upstream wrote the next (see
// streamChunks), which no gateway that buffered the answer could let happen.
// It does not depend on timing: a loaded machine makes the steps slower,
// never out of order.
func checkStream(t *testing.T, redact *strings.Replacer, log *streamLog, r clientResult, model string) {
	t.Helper()
	if !r.OK {
		t.Errorf("%s: failed: %s", r.Name, describe(redact, r))
		return
	}
	if r.Content != clientAnswer() {
		t.Errorf("%s: content %q, want %q", r.Name, r.Content, clientAnswer())
	}
	sent := log.sends(model)
	if len(r.Chunks) != clientChunks || len(sent) != clientChunks {
		t.Errorf("%s: client got %d chunks, upstream flushed %d; want %d", r.Name, len(r.Chunks), len(sent), clientChunks)
		return
	}
	var arrivals []string
	for i, c := range r.Chunks {
		arrivals = append(arrivals, fmt.Sprintf("%d: sent %s, arrived %s", i,
			sent[i].Sub(sent[0]).Round(time.Millisecond), msTime(c.T).Sub(sent[0]).Round(time.Millisecond)))
	}
	t.Logf("%s: chunk times from the upstream's first flush: %s", r.Name, strings.Join(arrivals, "; "))
	if i, stalled := log.stalledAt(model); stalled {
		t.Errorf("%s: %s after the upstream flushed chunk %d, the client did not have it: the gateway held the answer back (%s)",
			r.Name, clientAckWait, i, strings.Join(arrivals, "; "))
	}
}

// gatewayMessage reads the message out of a refusal body in the given
// error_format and lists where the body departs from it. Besides the fields
// the SDKs read, the gateway may keep its own code and reason (error.reason
// in the openai format, "code" and "reason" beside "error" in the ollama
// format); when present they must be the refusal's.
func gatewayMessage(format, body, code, reason string) (message string, problems []string) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &top); err != nil {
		return "", []string{"not a JSON object"}
	}
	raw, ok := top["error"]
	if !ok {
		return "", []string{`no "error" field`}
	}
	// field checks an optional string field of obj (named as where.name).
	field := func(obj map[string]json.RawMessage, where, name, want string, required bool) string {
		v, ok := obj[name]
		if !ok {
			if required {
				problems = append(problems, where+name+" missing")
			}
			return ""
		}
		var s string
		if json.Unmarshal(v, &s) != nil || s == "" {
			problems = append(problems, where+name+" is not a non-empty string")
		} else if want != "" && s != want {
			problems = append(problems, fmt.Sprintf("%s%s is %q, want %q", where, name, s, want))
		}
		return s
	}
	extra := func(obj map[string]json.RawMessage, where string, allowed ...string) {
		for name := range obj {
			if !slices.Contains(allowed, name) {
				problems = append(problems, "unexpected field "+where+name)
			}
		}
	}
	switch format {
	case "ollama":
		if err := json.Unmarshal(raw, &message); err != nil {
			return "", append(problems, `"error" is not a string (the ollama format is {"error": "<message>"})`)
		}
		field(top, "", "code", code, false)
		field(top, "", "reason", reason, false)
		extra(top, "", "error", "code", "reason")
	case "openai":
		var e map[string]json.RawMessage
		if err := json.Unmarshal(raw, &e); err != nil {
			return "", append(problems, `"error" is not an object (the openai format is {"error": {"message", "type", "param", "code"}})`)
		}
		message = field(e, "error.", "message", "", true)
		field(e, "error.", "type", "", true)
		field(e, "error.", "code", code, true)
		field(e, "error.", "reason", reason, false)
		if v, ok := e["param"]; !ok || string(v) != "null" {
			problems = append(problems, "error.param is not null")
		}
		extra(top, "", "error")
		extra(e, "error.", "message", "type", "param", "code", "reason")
	}
	return message, problems
}

// checkRefusal asserts that a step failed with the gateway's refusal, sent
// once (no retry), in the route's error_format, and that the SDK's exception
// carries the gateway's message.
func checkRefusal(t *testing.T, redact *strings.Replacer, r clientResult, sdk, format string, status int, code, reason string) {
	t.Helper()
	if r.OK || r.Error == nil {
		t.Errorf("%s: succeeded, want a %d refusal: %s", r.Name, status, describe(redact, r))
		return
	}
	if len(r.Attempts) != 1 {
		var seen []string
		for _, a := range r.Attempts {
			seen = append(seen, fmt.Sprintf("%d (Retry-After %q, x-should-retry %q)", a.Status, header(a.RetryAfter), header(a.ShouldRetry)))
		}
		t.Errorf("%s: the SDK sent %d requests, want 1 (no retry of this %d): %s", r.Name, len(r.Attempts), status, strings.Join(seen, ", "))
		if len(r.Attempts) == 0 {
			t.Errorf("%s: %s", r.Name, describe(redact, r))
			return
		}
	}
	a := r.Attempts[0]
	if a.Status != status {
		t.Errorf("%s: status %d, want %d: %s", r.Name, a.Status, status, describe(redact, r))
		return
	}
	if !strings.HasPrefix(a.ContentType, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", r.Name, a.ContentType)
	}
	message, problems := gatewayMessage(format, a.Body, code, reason)
	t.Logf("%s: %d %s; the SDK's %s says %q", r.Name, a.Status, strings.TrimSpace(a.Body), r.Error.Name, r.Error.Message)
	if len(problems) > 0 {
		t.Errorf("%s: the gateway's body is not in the %s error_format (%s): %s; the SDK's %s says %q",
			r.Name, format, strings.Join(problems, "; "), redact.Replace(strings.TrimSpace(a.Body)), r.Error.Name, redact.Replace(r.Error.Message))
	}
	if message == "" {
		return
	}
	e := r.Error
	switch sdk {
	case "openai":
		if !strings.Contains(e.Message, message) {
			t.Errorf("%s: %s message %q does not contain the gateway's message %q", r.Name, e.Name, e.Message, message)
		}
		if e.Status != status {
			t.Errorf("%s: %s.status %d, want %d", r.Name, e.Name, e.Status, status)
		}
		if e.Code == nil || *e.Code != code {
			t.Errorf("%s: %s.code %v, want %q", r.Name, e.Name, strPtr(e.Code), code)
		}
	case "ollama":
		if e.Name != "ResponseError" || e.StatusCode != status {
			t.Errorf("%s: exception %s with status_code %d, want ResponseError with %d", r.Name, e.Name, e.StatusCode, status)
		}
		if e.Message != message {
			t.Errorf("%s: ResponseError.message %q, want the gateway's message %q", r.Name, e.Message, message)
		}
	}
}

func strPtr(s *string) string {
	if s == nil {
		return "<none>"
	}
	return strconv.Quote(*s)
}

func header(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkQuickQuotaRefusal asserts that a daily-quota 429 tells clients not to
// retry and that the SDK gave up at once, though Retry-After points hours
// ahead.
func checkQuickQuotaRefusal(t *testing.T, r clientResult) {
	t.Helper()
	if len(r.Attempts) == 0 {
		return
	}
	a := r.Attempts[0]
	if got := header(a.ShouldRetry); got != "false" {
		t.Errorf("%s: x-should-retry %q on the daily-quota 429, want \"false\"", r.Name, got)
	}
	if header(a.RetryAfter) == "" {
		t.Errorf("%s: no Retry-After on the daily-quota 429", r.Name)
	}
	// From the answer on: the time before it is the gateway's and the
	// machine's, not the SDK's choice.
	if d := msTime(r.End).Sub(msTime(r.Attempts[len(r.Attempts)-1].Answered)); d > time.Second {
		t.Errorf("%s: the SDK gave up %s after the answer, want under 1s (it must not wait for Retry-After %q)", r.Name, d.Round(time.Millisecond), header(a.RetryAfter))
	} else {
		t.Logf("%s: x-should-retry %q, Retry-After %q: the SDK gave up after %d request(s), %s after the answer",
			r.Name, header(a.ShouldRetry), header(a.RetryAfter), len(r.Attempts), d.Round(time.Millisecond))
	}
}

func TestClients(t *testing.T) {
	node := requireClients(t)

	keysWith := func(id, role string, services ...string) gatewaytest.Key {
		return gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: id, Role: role, Services: services})
	}
	one := int64(1)
	var (
		good        = keysWith("k_clients_good", "writer", "openai", "ollama")
		reader      = keysWith("k_clients_reader", "reader", "openai", "ollama")
		openaiOnly  = keysWith("k_clients_openai_only", "writer", "openai")
		ollamaOnly  = keysWith("k_clients_ollama_only", "writer", "ollama")
		burstKey    = keysWith("k_clients_burst", "writer", "openai")
		quotaOpenAI = keysWith("k_clients_quota_openai", "writer", "openai")
		quotaOllama = keysWith("k_clients_quota_ollama", "writer", "ollama")
		unknown     = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_clients_unknown"}) // not in the key file
	)
	quotaOpenAI.Record.QuotaPerDay = &one
	quotaOllama.Record.QuotaPerDay = &one
	all := []gatewaytest.Key{good, reader, openaiOnly, ollamaOnly, burstKey, quotaOpenAI, quotaOllama, unknown}
	var pairs []string
	for _, k := range all {
		pairs = append(pairs, k.Secret, "<key "+k.Record.ID+">")
	}
	redact := strings.NewReplacer(pairs...)
	keyFile := gatewaytest.WriteKeyFile(t, good.Record, reader.Record, openaiOnly.Record, ollamaOnly.Record,
		burstKey.Record, quotaOpenAI.Record, quotaOllama.Record)

	log := newStreamLog()
	openaiUp, ollamaUp, acks := newOpenAIUpstream(t, log), newOllamaUpstream(t, log), log.ackServer(t)
	port := gatewaytest.Port(t)
	gw := fmt.Sprintf("http://127.0.0.1:%d", port)
	caddyLog := filepath.Join(t.TempDir(), "caddy.log")
	// reverse_proxy as a user would write it: no flush_interval; Caddy
	// flushes event streams and bodies of unknown length at once.
	// failed_auth_limit off: the bad-key steps must not depend on what
	// other tests in this process did from 127.0.0.1.
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
		level INFO
	}
}

http://127.0.0.1:%[2]d {
	handle_path /openai/* {
		apikey {
			keys file %[3]s
			service openai
			error_format openai
			upstream_auth bearer %[4]s
			failed_auth_limit off
		}
		reverse_proxy %[5]s
	}
	handle_path /openai-burst/* {
		apikey {
			keys file %[3]s
			service openai
			error_format openai
			upstream_auth bearer %[4]s
			rate dev 1/s
			failed_auth_limit off
		}
		reverse_proxy %[5]s
	}
	handle_path /ollama/* {
		apikey {
			keys file %[3]s
			service ollama
			upstream_auth %[6]s
			failed_auth_limit off
		}
		reverse_proxy %[7]s
	}
	respond "no route" 404
}
`, caddyLog, port, keyFile, openaiUpstreamTk, strings.TrimPrefix(openaiUp.URL, "http://"), ollamaUpstreamTk, strings.TrimPrefix(ollamaUp.URL, "http://")))

	t.Run("openai", func(t *testing.T) {
		base, burst := gw+"/openai/v1", gw+"/openai-burst/v1"
		step := func(name string, key gatewaytest.Key, op, baseURL string) clientStep {
			return clientStep{Name: name, Base: baseURL, Key: key.Secret, Op: op, Model: "openai-" + name,
				Ack: acks.URL + "/?model=openai-" + name}
		}
		steps := []clientStep{
			step("stream", good, "chat_stream", base),
			step("chat", good, "chat", base),
			step("bad_key", unknown, "chat", base),
			step("forbidden_method", reader, "chat", base),
			step("forbidden_service", ollamaOnly, "chat", base),
			step("quota_spend", quotaOpenAI, "chat", base),
			step("quota_exceeded", quotaOpenAI, "chat", base),
			step("burst_first", burstKey, "chat", burst),
			step("burst_second", burstKey, "chat", burst), // right after: 429, retried after Retry-After
		}
		res := runClient(t, node, "openai.mjs", redact, steps)

		checkStream(t, redact, log, res["stream"], "openai-stream")
		if r := res["chat"]; !r.OK || r.Content != clientAnswer() {
			t.Errorf("chat: want %q: %s", clientAnswer(), describe(redact, r))
		}
		checkRefusal(t, redact, res["bad_key"], "openai", "openai", 401, "invalid_key", "")
		checkRefusal(t, redact, res["forbidden_method"], "openai", "openai", 403, "forbidden", "method")
		checkRefusal(t, redact, res["forbidden_service"], "openai", "openai", 403, "forbidden", "service")

		if r := res["quota_spend"]; !r.OK {
			t.Errorf("quota_spend: the key's one request of the day failed: %s", describe(redact, r))
		}
		checkRefusal(t, redact, res["quota_exceeded"], "openai", "openai", 429, "quota_exceeded", "")
		checkQuickQuotaRefusal(t, res["quota_exceeded"])
		if n := log.count("openai-quota_exceeded"); n != 0 {
			t.Errorf("quota_exceeded: the upstream saw %d requests, want 0", n)
		}

		if r := res["burst_first"]; !r.OK {
			t.Errorf("burst_first: %s", describe(redact, r))
		}
		r := res["burst_second"]
		var statuses []string
		for _, a := range r.Attempts {
			statuses = append(statuses, strconv.Itoa(a.Status))
		}
		switch {
		case !r.OK:
			t.Errorf("burst_second: the SDK gave up on the burst 429 (attempts %v): %s", statuses, describe(redact, r))
		case len(r.Attempts) != 2 || r.Attempts[0].Status != 429 || r.Attempts[1].Status != 200:
			t.Errorf("burst_second: attempts %v, want [429 200] (two quick requests on a 1/s route): %s", statuses, describe(redact, r))
		default:
			first := r.Attempts[0]
			if _, problems := gatewayMessage("openai", first.Body, "rate_limited", "burst"); len(problems) > 0 {
				t.Errorf("burst_second: the burst 429's body is not in the openai error_format (%s): %s",
					strings.Join(problems, "; "), strings.TrimSpace(first.Body))
			}
			if header(first.ShouldRetry) != "" {
				t.Errorf("burst_second: x-should-retry %q on a burst 429, want none (Retry-After alone)", header(first.ShouldRetry))
			}
			secs, err := strconv.ParseFloat(header(first.RetryAfter), 64)
			if err != nil || secs < 1 {
				t.Errorf("burst_second: Retry-After %q on a burst 429, want whole seconds >= 1", header(first.RetryAfter))
				break
			}
			want := time.Duration(secs * float64(time.Second))
			if ms, err := strconv.ParseFloat(header(first.RetryAfterMs), 64); err == nil {
				want = time.Duration(ms * float64(time.Millisecond)) // the SDK prefers it
			}
			// The SDK waits what the gateway asks (its own first backoff is
			// 0.5 s at most).
			wait := time.Duration((r.Attempts[1].Sent - first.Sent) * float64(time.Millisecond))
			if wait < want-50*time.Millisecond {
				t.Errorf("burst_second: retried after %s, want the gateway's wait (Retry-After %s) honoured", wait.Round(time.Millisecond), header(first.RetryAfter))
			}
			t.Logf("burst_second: 429 with Retry-After %s, retried after %s, then 200", header(first.RetryAfter), wait.Round(time.Millisecond))
		}
		if n := log.count("openai-burst_second"); n != 1 {
			t.Errorf("burst_second: the upstream saw %d requests, want 1 (the retry)", n)
		}
	})

	t.Run("ollama", func(t *testing.T) {
		base := gw + "/ollama"
		step := func(name string, key gatewaytest.Key, op string) clientStep {
			return clientStep{Name: name, Base: base, Key: key.Secret, Op: op, Model: "ollama-" + name,
				Ack: acks.URL + "/?model=ollama-" + name}
		}
		steps := []clientStep{
			step("chat_stream", good, "chat_stream"),
			step("generate_stream", good, "generate_stream"),
			step("chat", good, "chat"),
			step("generate", good, "generate"),
			step("bad_key", unknown, "chat"),
			step("forbidden_method", reader, "chat"),
			step("forbidden_service", openaiOnly, "chat"),
			step("quota_spend", quotaOllama, "generate"),
			step("quota_exceeded", quotaOllama, "generate"),
		}
		res := runClient(t, node, "ollama.mjs", redact, steps)

		checkStream(t, redact, log, res["chat_stream"], "ollama-chat_stream")
		checkStream(t, redact, log, res["generate_stream"], "ollama-generate_stream")
		for _, name := range []string{"chat", "generate", "quota_spend"} {
			if r := res[name]; !r.OK || r.Content != clientAnswer() {
				t.Errorf("%s: want %q: %s", name, clientAnswer(), describe(redact, r))
			}
		}
		// No error_format on this route: service ollama defaults to it.
		checkRefusal(t, redact, res["bad_key"], "ollama", "ollama", 401, "invalid_key", "")
		checkRefusal(t, redact, res["forbidden_method"], "ollama", "ollama", 403, "forbidden", "method")
		checkRefusal(t, redact, res["forbidden_service"], "ollama", "ollama", 403, "forbidden", "service")
		checkRefusal(t, redact, res["quota_exceeded"], "ollama", "ollama", 429, "quota_exceeded", "")
		checkQuickQuotaRefusal(t, res["quota_exceeded"])
		if n := log.count("ollama-quota_exceeded"); n != 0 {
			t.Errorf("quota_exceeded: the upstream saw %d requests, want 0", n)
		}
	})

	// The upstreams got their own credentials, never a client's key.
	log.mu.Lock()
	defer log.mu.Unlock()
	for model, auth := range log.auth {
		want := "Bearer " + openaiUpstreamTk
		if strings.HasPrefix(model, "ollama-") {
			want = "Bearer " + ollamaUpstreamTk
		}
		if auth != want {
			t.Errorf("%s: the upstream got Authorization %q, want %q", model, redact.Replace(auth), want)
		}
	}
	if t.Failed() {
		if data, err := os.ReadFile(caddyLog); err == nil {
			lines := strings.Split(strings.TrimSpace(redact.Replace(string(data))), "\n")
			t.Logf("last lines of Caddy's log:\n%s", strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
	}
}
