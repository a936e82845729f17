package apikey

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/testtools"
)

// A request no retry can pass, seen by every client library an LLM gateway
// meets: one call per client (testdata/clients/unretryable.mjs) with a
// reservation larger than the key's whole per-minute token budget, against
// a real Caddy in front of llmUpstream.

// unretryableResult is what unretryable.mjs prints for one call.
type unretryableResult struct {
	Client  string  `json:"client"`
	Version string  `json:"version"`
	OK      bool    `json:"ok"`
	Elapsed float64 `json:"elapsed_ms"`
	// AfterAnswer is from the gateway's last answer to the end of the call.
	AfterAnswer *float64 `json:"after_answer_ms"`
	Aborted     bool     `json:"aborted"`
	Attempts    []struct {
		Path        string  `json:"path"`
		Status      int     `json:"status"`
		RetryAfter  *string `json:"retry_after"`
		ShouldRetry *string `json:"should_retry"`
		Body        string  `json:"body"`
	} `json:"attempts"`
	Error *struct {
		Name    string `json:"name"`
		Message string `json:"message"`
	} `json:"error"`
}

// requestsSeen is the gateway's count of requests on service's routes, every
// decision and key type summed, read from Caddy's /metrics.
func requestsSeen(t *testing.T, admin, service string) float64 {
	t.Helper()
	code, body := gatewaytest.Admin(t, "GET", admin, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "caddy_apikey_requests_total{") || !strings.Contains(line, `service="`+service+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("/metrics: %q", line)
		}
		sum += v
	}
	return sum
}

// TestTokenOverWholeBudgetClients: a reservation larger than the key's
// whole per-minute budget fails at once in every client: openai 7 and 6,
// ollama, the AI SDK with @ai-sdk/openai (Responses API and chat) and
// @ai-sdk/openai-compatible, LangChain's ChatOpenAI. Each makes exactly one
// request (the client's own count and the gateway's), fails within a
// second, and the upstream is never called. The answer is 400
// invalid_request_error, which none of them retries, with the budget named
// in its reason.
func TestTokenOverWholeBudgetClients(t *testing.T) {
	node := requireTokenSDKs(t)
	for _, pkg := range []string{"openai6", "ai", "@ai-sdk/openai", "@ai-sdk/openai-compatible", "@langchain/openai", "@langchain/core"} {
		if _, err := os.Stat(filepath.Join("testdata/clients/node_modules", pkg, "package.json")); err != nil {
			testtools.Missing(t, "the npm packages in testdata/clients", "APIKEY_REQUIRE_NODE",
				"npm package "+pkg+" is not installed in testdata/clients/node_modules (cd testdata/clients && npm ci --no-audit --no-fund)")
		}
	}
	up := newLLMUpstream(t, 0)
	key := tokenKey(t, "k_unretryable", nil)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	route := func(service string) string {
		return fmt.Sprintf(`handle_path /%[1]s/* {
		apikey {
			keys file %[2]s
			service %[1]s
			tokens %[1]s
			token_rate dev 100/m
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}`, service, gatewaytest.WriteKeyFile(t, key.Record), strings.TrimPrefix(up.URL, "http://"))
	}
	gatewaytest.Start(t, fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n}\nhttp://127.0.0.1:%d {\n\t%s\n\t%s\n}\n",
		adminPort, port, route("openai"), route("ollama")))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	script := startNodeScript(t, node, "unretryable.mjs", 2*time.Minute)
	redact := strings.NewReplacer(key.Secret, "<key "+key.Record.ID+">")

	for _, client := range []string{"openai7", "openai6", "ollama", "ai-openai", "ai-openai-chat", "ai-openai-compatible", "langchain"} {
		service, root := "openai", base+"/openai/v1"
		if client == "ollama" {
			service, root = "ollama", base+"/ollama"
		}
		seen := requestsSeen(t, admin, service)
		// 500 completion tokens: more than the whole 100 a minute. A
		// client still retrying after 4 s is stopped there.
		var r unretryableResult
		line := script.step(key, map[string]any{"client": client, "base": root, "key": key.Secret, "model": "llama3",
			"max_tokens": 500, "deadline_ms": 4000}, client, &r)
		name := client + " " + r.Version
		if r.OK || r.Error == nil {
			t.Errorf("%s: the call succeeded", name)
		}
		if n := requestsSeen(t, admin, service) - seen; n != 1 || len(r.Attempts) != 1 {
			t.Errorf("%s: the gateway saw %v requests, the client made %d (aborted after 4 s: %v), want 1 and 1",
				name, n, len(r.Attempts), r.Aborted)
		}
		// Given up at once on the answer: the time before it is the
		// gateway's and the machine's, not the client's choice.
		if r.AfterAnswer == nil || *r.AfterAnswer >= 1000 {
			t.Errorf("%s: gave up %s after the gateway's answer, want under 1 s", name, afterAnswer(r.AfterAnswer))
		}
		if len(r.Attempts) > 0 {
			a := r.Attempts[0]
			if a.Status != 400 || !strings.Contains(a.Body, `"reason":"tokens_minute"`) || !strings.Contains(a.Body, `"code":"invalid_request"`) {
				t.Errorf("%s: %s answered %d %s, want 400 invalid_request, reason tokens_minute", name, a.Path, a.Status, a.Body)
			}
			if a.RetryAfter != nil {
				t.Errorf("%s: Retry-After %q on a request no retry can pass", name, *a.RetryAfter)
			}
		}
		if r.Error != nil && !strings.Contains(r.Error.Message, "per-minute token budget") {
			t.Errorf("%s: the error the application sees does not say why: %s: %s", name, r.Error.Name, r.Error.Message)
		}
		t.Logf("%s: %d request(s), failed after %.0f ms (%s after the answer): %s", name, len(r.Attempts), r.Elapsed,
			afterAnswer(r.AfterAnswer), redact.Replace(string(bytes.TrimSpace(line))))
	}
	if n := up.calls.Load(); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}
}

// afterAnswer prints an after_answer_ms reading.
func afterAnswer(ms *float64) string {
	if ms == nil {
		return "(no answer)"
	}
	return fmt.Sprintf("%.0f ms", *ms)
}
