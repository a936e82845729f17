package apikey

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// The demo keys README.md lists for examples/keys.json. They are public and
// for the demo only.
const (
	demoReader  = "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl"
	demoWriter  = "PROD_API_7f0yp1eZjfGIJoJhjQ9vFQGlLHpImm2RMKx5"
	demoAdmin   = "DEV_API_cLhRWcPYX4MdVbKXm94xj2vanyDqd408fWPV"
	demoCustom  = "PROD_API_9AL31ggt7bhGT2t1vJMP27zmen8v432Xo9hp"
	demoRevoked = "DEV_API_fRNLgNEtPqTWU5cGUYpLkYHxi3wb7w3oRDoN"
	demoExpired = "DEV_API_kqTuw2IBuLoLorx1qadY5o4ODTmyp04HGWdn"
	demoRotated = "DEV_API_PDeGu7nf8gSoHLJDG90Hca92xQvYvL0Ya80Z"
	demoOldKey  = "DEV_API_8BfyVlPiJW4Hs2SP7hhXSANQzBp4kN1rYEQl"
)

// TestExample runs examples/Caddyfile (on free ports instead of 8080, 8081
// and 2019) and checks what README.md says the demo answers.
func TestExample(t *testing.T) {
	data, err := os.ReadFile("examples/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	gw, up, admin := gatewaytest.Port(t), gatewaytest.Port(t), gatewaytest.Port(t)
	cfg := strings.NewReplacer(
		"localhost:8080", fmt.Sprintf("localhost:%d", gw),
		"localhost:8081", fmt.Sprintf("localhost:%d", up),
		"localhost:2019", fmt.Sprintf("localhost:%d", admin),
	).Replace(string(data))
	if cfg == string(data) {
		t.Fatal("the example's ports were not found")
	}
	gatewaytest.Start(t, cfg)
	base := fmt.Sprintf("http://localhost:%d", gw)

	for _, c := range []struct {
		name         string
		method, path string
		headers      []string
		status       int
		code, reason string
		bodyHas      string
	}{
		{"reader", "GET", "/ollama/api/tags", []string{"Authorization", "Bearer " + demoReader}, 200, "", "", "Authorization=[Bearer demo-ollama-token]"},
		{"reader via X-API-Key", "GET", "/ollama/api/tags", []string{"X-API-Key", demoReader}, 200, "", "", "X-API-Key=[]"},
		{"no key", "GET", "/ollama/api/tags", nil, 401, "missing_key", "", ""},
		{"mistyped key", "GET", "/ollama/api/tags", []string{"X-API-Key", demoReader[:len(demoReader)-1] + "x"}, 401, "invalid_key", "", ""},
		{"revoked", "GET", "/ollama/api/tags", []string{"X-API-Key", demoRevoked}, 401, "revoked_key", "", ""},
		{"expired", "GET", "/ollama/api/tags", []string{"X-API-Key", demoExpired}, 401, "expired_key", "", ""},
		{"reader may not POST", "POST", "/ollama/api/chat", []string{"X-API-Key", demoReader}, 403, "forbidden", "method", ""},
		{"dev key on the prod-only n8n route", "GET", "/n8n/api/v1/workflows", []string{"X-API-Key", demoAdmin}, 403, "forbidden", "key_type", ""},
		{"prod writer on n8n", "GET", "/n8n/api/v1/workflows", []string{"X-API-Key", demoWriter}, 200, "", "", "X-N8N-API-KEY=[demo-n8n-key]"},
		{"custom: chat allowed", "POST", "/ollama/api/chat", []string{"X-API-Key", demoCustom}, 200, "", "", ""},
		{"custom: pull refused", "POST", "/ollama/api/pull", []string{"X-API-Key", demoCustom}, 403, "forbidden", "method", ""},
		{"custom key lacks n8n", "GET", "/n8n/api/v1/workflows", []string{"X-API-Key", demoCustom}, 403, "forbidden", "service", ""},
		{"rotated: new secret", "GET", "/ollama/api/tags", []string{"X-API-Key", demoRotated}, 200, "", "", ""},
		{"rotated: old secret in grace", "GET", "/ollama/api/tags", []string{"X-API-Key", demoOldKey}, 200, "", "", ""},
		{"admin from localhost", "DELETE", "/ollama/api/delete", []string{"X-API-Key", demoAdmin}, 200, "", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := gatewaytest.Send(t, c.method, base+c.path, c.headers...)
			if r.Status != c.status || r.Err.Code != c.code || r.Err.Reason != c.reason {
				t.Fatalf("got %d %q %q, want %d %q %q", r.Status, r.Err.Code, r.Err.Reason, c.status, c.code, c.reason)
			}
			if !strings.Contains(r.Body, c.bodyHas) {
				t.Errorf("body %q lacks %q", r.Body, c.bodyHas)
			}
			if c.name == "rotated: old secret in grace" && r.Header.Get("Deprecation") != "true" {
				t.Error("no Deprecation header")
			}
			if c.name == "reader" && r.Header.Get("X-RateLimit-Limit") != "100" {
				t.Errorf("the demo reader's quota is %q, README says 100", r.Header.Get("X-RateLimit-Limit"))
			}
		})
	}

	// The demo forgives a user trying the README's 401 examples again and
	// again: 30 failures in a row do not lock the address out.
	for range 30 {
		gatewaytest.Send(t, "GET", base+"/ollama/api/tags", "X-API-Key", demoRevoked)
	}
	if r := gatewaytest.Send(t, "GET", base+"/ollama/api/tags", "X-API-Key", demoReader); r.Status != 200 {
		t.Errorf("after 30 failed tries the demo reader gets %d, want 200", r.Status)
	}
}

// TestExampleRecordsHaveTypes: every demo record says its type, so the
// admin API shows the quota the gateway enforces.
func TestExampleRecordsHaveTypes(t *testing.T) {
	data, err := os.ReadFile("examples/keys.json")
	if err != nil {
		t.Fatal(err)
	}
	records, err := keystore.ParseRecords(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range records {
		if rec.Type == "" {
			t.Errorf("demo record %s has no type", rec.ID)
		}
	}
}
