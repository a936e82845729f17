package apikey

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/testtools"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// The official JavaScript SDKs (npm openai and ollama, pinned in
// testdata/clients/package.json) against routes with tokens in front of
// llmUpstream, driven by testdata/clients/tokens.mjs (one Node process, fed
// one call at a time, the test checking the gateway between calls):
// each call works as it does against the upstream itself, and the gateway
// charges exactly what the upstream reported. Skipped without node and the
// packages, unless APIKEY_REQUIRE_NODE is set (see clients_test.go).

// tokenSDKResult is what tokens.mjs prints.
type tokenSDKResult struct {
	OK          bool   `json:"ok"`
	Content     string `json:"content"`
	Chunks      int    `json:"chunks"`
	UsageChunks int    `json:"usage_chunks"`
	Usage       *struct {
		Prompt     *int64 `json:"prompt_tokens"`
		Completion *int64 `json:"completion_tokens"`
	} `json:"usage"`
	Attempts []struct {
		Status      int     `json:"status"`
		Remaining   *string `json:"ratelimit_remaining"`
		RetryAfter  *string `json:"retry_after"`
		ShouldRetry *string `json:"should_retry"`
		Body        string  `json:"body"`
	} `json:"attempts"`
	Error *struct {
		Name    string `json:"name"`
		Message string `json:"message"`
		Status  int    `json:"status"`
	} `json:"error"`
}

// requireTokenSDKs returns node, or skips (fails under APIKEY_REQUIRE_NODE)
// when node or the npm packages are missing.
func requireTokenSDKs(t *testing.T) string {
	t.Helper()
	const install = "cd testdata/clients && npm ci --no-audit --no-fund"
	node := testtools.Require(t, "node", "APIKEY_REQUIRE_NODE", "apt-get install nodejs npm, then "+install)
	for _, pkg := range []string{"openai", "ollama"} {
		if _, err := os.Stat(filepath.Join("testdata/clients/node_modules", pkg, "package.json")); err != nil {
			testtools.Missing(t, "the npm packages in testdata/clients", "APIKEY_REQUIRE_NODE",
				"npm package "+pkg+" is not installed in testdata/clients/node_modules ("+install+")")
		}
	}
	return node
}

// nodeScript is a script of testdata/clients running in node, fed one
// JSON step a line on standard input, answering each with one JSON line.
type nodeScript struct {
	t      *testing.T
	name   string
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
}

// startNodeScript runs script in testdata/clients with node for at most
// within, until the test ends.
func startNodeScript(t *testing.T, node, script string, within time.Duration) *nodeScript {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = "testdata/clients"
	s := &nodeScript{t: t, name: "node " + script, stderr: &bytes.Buffer{}}
	cmd.Stderr = s.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.in, s.out = in, bufio.NewReader(out)
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
		cancel()
	})
	return s
}

// step sends one step, which holds key k, and decodes the answer into
// result; it returns the answer's line. The key is replaced by its id in
// anything printed; what names the step in a failure.
func (s *nodeScript) step(k gatewaytest.Key, step map[string]any, what string, result any) []byte {
	t := s.t
	t.Helper()
	plan, _ := json.Marshal(step)
	redact := strings.NewReplacer(k.Secret, "<key "+k.Record.ID+">")
	if _, err := s.in.Write(append(plan, '\n')); err != nil {
		t.Fatalf("%s %s: %v\nstderr: %s", s.name, what, err, redact.Replace(s.stderr.String()))
	}
	line, err := s.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("%s %s: %v\nstderr: %s", s.name, what, err, redact.Replace(s.stderr.String()))
	}
	if err := json.Unmarshal(line, result); err != nil {
		t.Fatalf("%s %s: not JSON: %v: %s", s.name, what, err, redact.Replace(string(line)))
	}
	return line
}

// tokenSDK is tokens.mjs running, waiting for steps.
type tokenSDK struct{ *nodeScript }

func startTokenSDK(t *testing.T, node string) *tokenSDK {
	t.Helper()
	return &tokenSDK{startNodeScript(t, node, "tokens.mjs", 40*time.Second)}
}

// run makes one SDK call with key k; the key goes on standard input, and is
// replaced by its id in anything printed.
func (s *tokenSDK) run(k gatewaytest.Key, step map[string]any) tokenSDKResult {
	t := s.t
	t.Helper()
	step["key"] = k.Secret
	var r tokenSDKResult
	line := s.step(k, step, fmt.Sprint(step["sdk"], " ", step["op"]), &r)
	if !r.OK && step["op"] != "chat_refused" {
		redact := strings.NewReplacer(k.Secret, "<key "+k.Record.ID+">")
		t.Fatalf("%v %v (key %s) failed: %s", step["sdk"], step["op"], k.Record.ID, redact.Replace(string(line)))
	}
	return r
}

// checkUsage checks the upstream's last report against the usage the
// client saw (wantUsage: the client is to see it), and returns the tokens
// the upstream reported since before.
func checkUsage(t *testing.T, name string, up *llmUpstream, before int64, wantUsage bool, r tokenSDKResult) int64 {
	t.Helper()
	reported := up.total() - before
	prompt, completion := up.last()
	if reported <= 0 || prompt+completion != reported {
		t.Fatalf("%s: the upstream reported %d (last %d+%d)", name, reported, prompt, completion)
	}
	switch {
	case !wantUsage && r.Usage != nil:
		t.Errorf("%s: the client saw usage it did not ask for", name)
	case wantUsage && (r.Usage == nil || r.Usage.Prompt == nil || r.Usage.Completion == nil ||
		*r.Usage.Prompt != prompt || *r.Usage.Completion != completion):
		b, _ := json.Marshal(r.Usage)
		t.Errorf("%s: the client saw usage %s, the upstream reported prompt %d, completion %d", name, b, prompt, completion)
	}
	return reported
}

// TestTokenClients: the openai SDK's chat.completions.create, plain,
// streamed without stream_options (the gateway asks for usage and the
// client never sees the usage chunk, asserted in the script) and with
// include_usage (exactly one usage chunk, the upstream's numbers); the
// ollama SDK's chat and generate, streamed and not. After each call the
// key's daily tokens left must be the budget less the sum the upstream
// reported. Last, a reservation over the whole budget: the openai SDK gets
// a 400 once (no retry can pass; TestTokenOverWholeBudgetClients has every
// client library) and the upstream is not called.
func TestTokenClients(t *testing.T) {
	node := requireTokenSDKs(t)
	const budget = 100000
	up := newLLMUpstream(t, 20*time.Millisecond)
	key := tokenKey(t, "k_sdk", func(r *keystore.Record) { r.TokensPerDay = int64p(budget); r.Models = []string{"llama3*"} })
	base := tokenSite(t, up, gatewaytest.WriteKeyFile(t, key.Record), "")
	g := newTokenGateway(t, base)
	sdk := startTokenSDK(t, node)

	for _, c := range []struct {
		sdk, op string
		usage   bool // the client sees the upstream's usage
	}{
		{"openai", "chat", true},
		{"openai", "chat_stream", false},
		{"openai", "chat_stream_usage", true},
		{"ollama", "chat", true},
		{"ollama", "chat_stream", true},
		{"ollama", "generate", true},
		{"ollama", "generate_stream", true},
	} {
		name := c.sdk + " " + c.op
		calls, before := up.calls.Load(), up.total()
		root := base + "/ollama"
		if c.sdk == "openai" {
			root = base + "/openai/v1"
		}
		r := sdk.run(key, map[string]any{"sdk": c.sdk, "op": c.op, "base": root, "model": "llama3", "max_tokens": 4})
		if strings.TrimSpace(r.Content) != "tok tok tok tok" {
			t.Errorf("%s: content %q, want 4 × tok", name, r.Content)
		}
		if n := up.calls.Load() - calls; n != 1 || len(r.Attempts) != 1 || r.Attempts[0].Status != 200 {
			t.Errorf("%s: %d upstream calls, %d attempts, want 1 and 1 answered 200", name, n, len(r.Attempts))
		}
		for _, a := range r.Attempts {
			g.admittedRemaining(key, a.Status, a.Remaining)
		}
		if c.op == "chat_stream_usage" && r.UsageChunks != 1 {
			t.Errorf("%s: %d usage chunks, want 1", name, r.UsageChunks)
		}
		reported := checkUsage(t, name, up, before, c.usage, r)
		g.waitTokensLeft(key, budget-up.total(), "after "+name)
		t.Logf("%s: %d chunks, upstream reported %d tokens, charged as much", name, r.Chunks, reported)
	}

	// A reservation over the whole budget: one 400, no retry, no upstream call.
	calls, left := up.calls.Load(), budget-up.total()
	r := sdk.run(key, map[string]any{"sdk": "openai", "op": "chat_refused", "base": base + "/openai/v1", "model": "llama3", "max_tokens": budget})
	switch {
	case r.OK || r.Error == nil || r.Error.Status != 400:
		t.Errorf("over the budget: ok %v, error %+v, want a 400 error", r.OK, r.Error)
	case len(r.Attempts) != 1:
		t.Errorf("over the budget: the SDK sent %d requests, want 1", len(r.Attempts))
	default:
		a := r.Attempts[0]
		if a.ShouldRetry == nil || *a.ShouldRetry != "false" || a.RetryAfter != nil {
			t.Errorf("over the budget: x-should-retry %v, retry-after %v", a.ShouldRetry, a.RetryAfter)
		}
		checkOpenAIRefusal(t, "over the budget (SDK)", a.Body, "invalid_request_error", "invalid_request", "tokens_daily")
	}
	if up.calls.Load() != calls {
		t.Errorf("over the budget: the upstream was called")
	}
	g.waitTokensLeft(key, left, "after a refusal (nothing charged)")
}
