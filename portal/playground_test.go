package portal

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestUnderService(t *testing.T) {
	svc := Service{Name: "ollama", Path: "/ollama/api/tags"}
	for path, want := range map[string]bool{
		"/ollama/api/tags":        true,
		"/ollama/api/chat?x=1":    true,
		"/ollama":                 true,
		"/ollamax/api":            false,
		"/other/ollama/":          false,
		"/ollama/../admin":        false,
		"/ollama/%2e%2e/admin":    false,
		"//evil.example/ollama/":  false,
		"http://evil.example/x":   false,
		"/ollama//x":              false,
		"ollama/api":              false,
		"/ollama/api/t%61gs":      false,
		"/ollama/api/tags#frag":   true,
		"/ollama/api/tags?k=1&j=": true,
	} {
		if got := underService(path, svc); got != want {
			t.Errorf("underService(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestExplain reads each of the gateway's error formats, as the gateway
// writes them (serve_responses.go), and says what the answer means.
func TestExplain(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		status int
		header http.Header
		body   string
		noKey  bool
		want   string
	}{
		{200, http.Header{"Ratelimit-Policy": {`"daily";q=20;w=86400`}}, `{}`, false, "Admitted"},
		{200, nil, `{}`, false, "reached no gateway route"}, // Caddy answered, no gateway route did
		{204, nil, ``, true, "reached no gateway route"},
		{200, http.Header{"Deprecation": {"true"}, "Sunset": {"Sat, 28 Nov 2026 12:00:00 GMT"}}, ``, false, "old secret"},
		{401, nil, `{"error":{"status":401,"code":"missing_key","message":"m"}}`, true, "Paste a key"},
		{401, nil, `{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"invalid_key"}}`, false, "does not know this key"},
		{401, nil, `{"error":"m","code":"revoked_key"}`, false, "revoked"},
		{401, nil, `{"error":{"status":401,"code":"expired_key","message":"m"}}`, false, "expired"},
		{403, nil, `{"error":{"status":403,"code":"forbidden","reason":"method","message":"m"}}`, false, "role or permissions"},
		{403, nil, `{"error":"m","code":"forbidden","reason":"service"}`, false, "may not use this service"},
		{403, nil, `{"error":{"message":"m","type":"permission_error","param":null,"code":"forbidden","reason":"ip"}}`, false, "IP allowlist"},
		{403, nil, `{"error":{"status":403,"code":"forbidden","reason":"pending_approval","message":"m"}}`, false, "approval"},
		{429, http.Header{"Retry-After": {"3600"}}, `{"error":{"status":429,"code":"quota_exceeded","message":"m"}}`, false, "daily quota is used up; it resets in 1h0m0s (at 2026-11-27 13:00:00 UTC)"},
		{429, http.Header{"Retry-After": {"2"}}, `{"error":{"status":429,"code":"rate_limited","message":"m"}}`, false, "faster than its rate"},
		{503, nil, `{"error":{"status":503,"code":"unavailable","message":"m"}}`, false, "says nothing about the key"},
		{500, nil, `not json`, false, "service's own answer"},
	} {
		h := c.header
		if h == nil {
			h = http.Header{}
		}
		got := explain(&http.Response{StatusCode: c.status, Header: h}, []byte(c.body), c.noKey, now)
		if !strings.Contains(got, c.want) {
			t.Errorf("%d %s: %q lacks %q", c.status, c.body, got, c.want)
		}
	}
}
