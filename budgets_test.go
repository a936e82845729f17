package apikey

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// tokenSite starts a gateway with two routes with tokens, /openai/* and
// /ollama/*, in front of up.
func tokenSite(t *testing.T, up *llmUpstream, keys string, extra string) string {
	t.Helper()
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`{
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
	resp, err := client.Do(req)
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
	key := newKey(t, keystore.Dev, keystore.Record{ID: "k_tokens", Type: "dev", Role: "writer", Services: []string{"*"},
		TokensPerDay: int64p(600), Models: []string{"llama3*"}})
	base := tokenSite(t, up, writeKeyFile(t, key.record), "default_max_tokens 100")

	resp, body := post(t, base+"/openai/v1/chat/completions", key.secret, `{"model":"llama3","messages":[{"role":"user","content":"hi"}],"max_tokens":50,"stream":true}`)
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
	resp, body = post(t, base+"/openai/v1/chat/completions", key.secret, `{"model":"gpt-4o","messages":[]}`)
	if resp.StatusCode != 403 || !strings.Contains(body, `"reason":"model"`) {
		t.Fatalf("a model outside the list: %d %s", resp.StatusCode, body)
	}
	calls := up.calls.Load()
	resp, body = post(t, base+"/openai/v1/chat/completions", key.secret, `{"model":"llama3","messages":[],"max_tokens":5000}`)
	if resp.StatusCode != 429 || !strings.Contains(body, "tokens_daily") || up.calls.Load() != calls {
		t.Fatalf("a reservation over the budget: %d %s; upstream calls %d→%d", resp.StatusCode, body, calls, up.calls.Load())
	}
	resp, body = post(t, base+"/ollama/api/chat", key.secret, `{"model":"llama3","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(body, `"eval_count":5`) {
		t.Fatalf("ollama stream: %d %s", resp.StatusCode, body)
	}
	time.Sleep(50 * time.Millisecond)
	resp, _ = post(t, base+"/ollama/api/generate", key.secret, `{"model":"llama3","prompt":"x","stream":false}`)
	t.Logf("after: %s", resp.Header.Get("RateLimit"))
}
