package admin_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// adminURIFilter is the log filter docs/admin-api.md gives for Caddy's own admin
// log, whose "received request" line holds the request URI.
const adminURIFilter = `uri regexp (?i)((dev|prod)(_|%(25)*5f)api(_|%(25)*5f)|sha256(:|%(25)*3a))[^/?&]*|([0-9a-f]|%(25)*[0-9a-f]{2}){64} REDACTED`

// TestResolvesTheExactID: the admin API acts on exactly the id it is
// given. An id that differs from a key's by an invisible character (a
// zero-width space, white space around it) is refused with 400, never read
// as that key's id: the key stays admitted and unrevoked.
func TestResolvesTheExactID(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw", Type: "dev", Role: "reader", Services: []string{"*"}})
	keyFile := gatewaytest.WriteKeyFile(t, k.Record)
	adminPort, port := gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.Start(t, gatewaytest.Site{Port: port, AdminPort: adminPort, KeyFile: keyFile, Apikey: "failed_auth_limit off",
		CountersFile: filepath.Join(t.TempDir(), "counters.json"), Handler: `respond "admitted {http.apikey.id}"`}.Caddyfile())
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	for _, c := range []struct{ method, uri, names string }{
		{"POST", "/apikey/keys/k_zw%E2%80%8B/revoke", "U+200B"},
		{"POST", "/apikey/keys/%E2%80%8Bk_zw/revoke", "U+200B"},
		{"POST", "/apikey/keys/k_zw%E2%80%AE/revoke", "U+202E"},
		{"POST", "/apikey/keys/k_zw%C2%A0/revoke", "U+00A0"},
		{"POST", "/apikey/keys/%20k_zw/revoke", "white space"},
		{"POST", "/apikey/keys/k_zw%0A/revoke", "U+000A"},
		{"DELETE", "/apikey/quota/k_zw%E2%80%8B", "U+200B"},
		{"POST", "/apikey/cache/purge?id=k_zw%E2%80%8B", "U+200B"},
		{"GET", "/apikey/usage?key=k_zw%E2%80%8B", "U+200B"},
	} {
		code, body := gatewaytest.Admin(t, c.method, admin, c.uri)
		if code != 400 || !strings.Contains(body, c.names) {
			t.Errorf("%s %s: %d %s, want 400 naming %s", c.method, c.uri, code, body, c.names)
		}
	}
	if r := gatewaytest.Send(t, "GET", url, k.Bearer()...); r.Status != 200 {
		t.Fatalf("k_zw after revocations of other ids: %d, want still admitted", r.Status)
	}
	if data, _ := os.ReadFile(keyFile); strings.Contains(string(data), "revoked") {
		t.Fatal("a revocation of another id revoked k_zw in the key file")
	}

	// The exact id, escaped or not, is k_zw's.
	if code, body := gatewaytest.Admin(t, "POST", admin, "/apikey/keys/k%5Fzw/revoke"); code != 200 {
		t.Fatalf("revoking k_zw: %d %s", code, body)
	}
	gatewaytest.WaitUntil(t, "k_zw refused once revoked", 2*time.Second, func() bool { return gatewaytest.Send(t, "GET", url, k.Bearer()...).Status == 401 })
}

// TestNeverRepeatsAKey: a key or its hash pasted where a key id
// belongs, with white space or invisible characters around it, percent-
// encoded or not, in the path, a parameter's value or its name, is refused
// with 400, and neither the answer nor any log line (Caddy's own admin log,
// with the filter docs/admin-api.md gives) holds it. A real id with the same
// clutter around it is refused too, never trimmed into the real id.
func TestNeverRepeatsAKey(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{Log: true, LogFilters: []string{adminURIFilter}})
	k := g.Keys["reader"]
	hash := strings.TrimPrefix(k.Record.Hash, "sha256:")
	for _, form := range []string{
		"%20" + k.Secret, k.Secret + "%0A", "%09" + k.Secret, "%C2%A0" + k.Secret, "%E2%80%8B" + k.Secret,
		"%2520" + k.Secret, url.PathEscape(k.Secret), "%20" + strings.ToLower(k.Secret),
		"sha256:" + hash, "sha256%3A" + hash, hash,
		// One bad escape elsewhere must not hide the good ones.
		strings.ReplaceAll(k.Secret, "_", "%5F") + "&x=%zz",
		strings.ReplaceAll(k.Secret, "_", "%255F") + "%25zz",
		hash[:10] + fmt.Sprintf("%%%02x", hash[10]) + hash[11:] + "&x=%zz",
		"sha256%3A" + hash + "&x=%zz",
	} {
		for _, req := range [][2]string{
			{"POST", "/apikey/keys/" + form + "/revoke"},
			{"DELETE", "/apikey/quota/" + form},
			{"POST", "/apikey/cache/purge?id=" + form},
			{"POST", "/apikey/cache/purge?id=+" + form},
			{"GET", "/apikey/usage?key=" + form},
			{"GET", "/apikey/usage?" + form + "=1"},
		} {
			code, body := gatewaytest.Admin(t, req[0], g.Admin, req[1])
			if code != 400 {
				t.Errorf("%s %s (key %s): %d, want 400", req[0], strings.Replace(req[1], form, "<key>", 1), k.Record.ID, code)
			}
			if leaks(body, k) {
				t.Errorf("%s %s: the answer repeats key %s", req[0], strings.Replace(req[1], form, "<key>", 1), k.Record.ID)
			}
		}
	}

	// The same clutter around a real id is refused, never trimmed away:
	// the admin API acts on exactly the id it is given (see
	// TestResolvesTheExactID).
	if code, body := gatewaytest.Admin(t, "DELETE", g.Admin, "/apikey/quota/%20k_ops_reader%0A"); code != 400 || !strings.Contains(body, "white space") {
		t.Errorf("quota reset of \" k_ops_reader\\n\": %d %s", code, body)
	}
	if code, body := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/cache/purge?id=%09k_ops_writer"); code != 400 || !strings.Contains(body, "U+0009") {
		t.Errorf("purge of \"\\tk_ops_writer\": %d %s", code, body)
	}
	// An unknown id that is not shaped like a key is named in the answer.
	if code, body := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/keys/k_nobody/revoke"); code != 404 || !strings.Contains(body, "k_nobody") {
		t.Errorf("unknown id: %d %s", code, body)
	}

	logs := gatewaytest.WaitForLog(t, g.CaddyLog, `"uri":"/apikey/keys/k_nobody/revoke"`)
	if !strings.Contains(logs, "REDACTED") || !strings.Contains(logs, `"msg":"request error"`) {
		t.Error("the admin log does not show the refused requests, redacted")
	}
	if leaks(logs, k) {
		t.Errorf("Caddy's log holds key %s or its hash", k.Record.ID)
	}
	if page, _ := os.ReadFile("../docs/admin-api.md"); !strings.Contains(string(page), "\t\t\t"+adminURIFilter+"\n") {
		t.Error("docs/admin-api.md does not give the admin log filter this test uses")
	}
	audit, _ := os.ReadFile(g.AuditLog)
	if leaks(string(audit), k) {
		t.Errorf("the audit log holds key %s or its hash", k.Record.ID)
	}
}
