package apikey

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestErrorFormats: each route's refusals come in its error_format, and a
// daily-quota 429 says no retry will help soon while a burst 429 does not.
func TestErrorFormats(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_formats", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(1)})
	burst := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_formats_burst", Role: "reader", Services: []string{"*"}, Rate: "1/m"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record, burst.Record)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%[1]d {
	handle_path /default/* {
		apikey {
			keys file %[2]s
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
	handle_path /openai/* {
		apikey {
			keys file %[2]s
			service openai
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
	handle_path /ollama/* {
		apikey {
			keys file %[2]s
			service ollama
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
	handle_path /ollama-v1/* {
		apikey {
			keys file %[2]s
			service ollama
			error_format openai
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
}`, port, keyFile, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	raw := func(method, path string, hdrs ...string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		for i := 0; i+1 < len(hdrs); i += 2 {
			req.Header.Set(hdrs[i], hdrs[i+1])
		}
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil && resp.StatusCode != 200 {
			t.Fatalf("%s: body is not JSON: %v", path, err)
		}
		return resp.StatusCode, resp.Header, body
	}

	// 401 in each format.
	_, _, body := raw("GET", "/default/x")
	if e, ok := body["error"].(map[string]any); !ok || e["code"] != "missing_key" || e["status"] != float64(401) || e["message"] == "" {
		t.Errorf("default: %v", body)
	}
	for _, path := range []string{"/openai/x", "/ollama-v1/x"} {
		_, _, body = raw("GET", path)
		e, ok := body["error"].(map[string]any)
		if !ok || e["code"] != "missing_key" || e["type"] != "authentication_error" || e["param"] != nil || !strings.HasPrefix(e["message"].(string), "No API key was sent") {
			t.Errorf("%s (openai): %v", path, body)
		}
	}
	_, _, body = raw("GET", "/ollama/x")
	if msg, ok := body["error"].(string); !ok || !strings.HasPrefix(msg, "No API key was sent") || body["code"] != "missing_key" {
		t.Errorf("ollama: %v", body)
	}
	// 403 with its reason.
	_, _, body = raw("POST", "/ollama/x", key.Bearer()...)
	if body["error"] != "The key's role or permissions do not allow this method on this path." || body["reason"] != "method" {
		t.Errorf("ollama 403: %v", body)
	}

	// The daily quota: one request passes, the next is final.
	if status, _, _ := raw("GET", "/openai/x", key.Bearer()...); status != 200 {
		t.Fatalf("first request: %d", status)
	}
	status, hdr, body := raw("GET", "/openai/x", key.Bearer()...)
	if status != 429 || hdr.Get("X-Should-Retry") != "false" || hdr.Get("Retry-After") == "" {
		t.Errorf("daily quota: %d, x-should-retry %q, retry-after %q", status, hdr.Get("X-Should-Retry"), hdr.Get("Retry-After"))
	}
	if e, _ := body["error"].(map[string]any); e["code"] != "quota_exceeded" || e["type"] != "rate_limit_error" {
		t.Errorf("daily quota body: %v", body)
	}
	// The burst rate: retrying helps, so no x-should-retry.
	raw("GET", "/openai/x", burst.Bearer()...)
	status, hdr, body = raw("GET", "/openai/x", burst.Bearer()...)
	if status != 429 || hdr.Get("X-Should-Retry") != "" || hdr.Get("Retry-After") == "" {
		t.Errorf("burst: %d, x-should-retry %q, retry-after %q", status, hdr.Get("X-Should-Retry"), hdr.Get("Retry-After"))
	}
	if e, _ := body["error"].(map[string]any); e["code"] != "rate_limited" || e["reason"] != "burst" {
		t.Errorf("burst body: %v", body)
	}
}
