package admin_test

import (
	"os"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestRevokeAndQuotaReset: the admin API revokes in the key file (the
// change applies at once and is audited) and resets a key's counters.
func TestRevokeAndQuotaReset(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{})
	r := g.Keys["reader"]
	for i := 0; i < 5; i++ {
		gatewaytest.Send(t, "GET", g.Base+"/ollama/x", r.Bearer()...)
	}
	if code, body := gatewaytest.Admin(t, "DELETE", g.Admin, "/apikey/quota/k_ops_reader"); code != 200 {
		t.Fatalf("quota reset: %d %s", code, body)
	}
	if res := gatewaytest.Send(t, "GET", g.Base+"/ollama/x", r.Bearer()...); res.Header.Get("X-RateLimit-Remaining") != "99" {
		t.Errorf("after the reset: remaining %q, want 99", res.Header.Get("X-RateLimit-Remaining"))
	}

	if code, body := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/keys/k_ops_reader/revoke"); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if res := gatewaytest.Send(t, "GET", g.Base+"/ollama/x", r.Bearer()...); res.Status != 401 || res.Err.Code != "revoked_key" {
		t.Errorf("right after the revocation: %d %q", res.Status, res.Err.Code)
	}
	data, _ := os.ReadFile(g.KeyFile)
	if !strings.Contains(string(data), `"id":"k_ops_reader"`) || !strings.Contains(string(data), `"revoked":true`) {
		t.Errorf("the key file does not hold the revocation:\n%s", data)
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/keys/k_nobody/revoke"); code != 404 {
		t.Errorf("revoking an unknown id: %d, want 404", code)
	}
	if code, _ := gatewaytest.Admin(t, "DELETE", g.Admin, "/apikey/quota/k_nobody"); code != 404 {
		t.Errorf("resetting an unknown id: %d, want 404", code)
	}
	// A key pasted where an id belongs is refused and never audited.
	for _, req := range [][2]string{
		{"DELETE", "/apikey/quota/" + r.Secret},
		{"POST", "/apikey/cache/purge?id=" + r.Secret},
		{"POST", "/apikey/keys/" + r.Secret + "/revoke"},
		{"GET", "/apikey/usage?key=" + r.Secret},
	} {
		if code, body := gatewaytest.Admin(t, req[0], g.Admin, req[1]); code != 400 || strings.Contains(body, r.Secret) {
			t.Errorf("%s with a key: %d %s", req[0], code, body)
		}
	}
	if code, _ := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/keys/k_ops_writer/revoke"); code != 405 {
		t.Errorf("GET on revoke: %d, want 405", code)
	}

	gatewaytest.WaitForLog(t, g.AuditLog, `"event":"key.revoked"`)
	// Refusals are written in the background: wait for them too.
	logs := gatewaytest.WaitForLog(t, g.AuditLog, `"event":"request.denied"`)
	for _, want := range []string{`"actor":"admin_api"`, `"event":"quota.reset"`, `"event":"request.denied"`, `"decision":"revoked_key"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(logs, r.Secret) || strings.Contains(logs, strings.TrimPrefix(r.Record.Hash, "sha256:")[:16]) {
		t.Error("the audit log holds a key or its hash")
	}
	// The chain of a log written by Caddy checks out with the CLI.
	if out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", g.AuditLog); code != 0 {
		t.Errorf("audit verify: %d %s %s", code, out, errOut)
	}
}
