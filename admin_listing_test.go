package apikey

import (
	"encoding/json"
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

// adminURIFilter is the log filter README.md gives for Caddy's own admin
// log, whose "received request" line holds the request URI.
const adminURIFilter = `uri regexp (?i)((dev|prod)(_|%(25)*5f)api(_|%(25)*5f)|sha256(:|%(25)*3a))[^/?&]*|([0-9a-f]|%(25)*[0-9a-f]{2}){64} REDACTED`

// TestAdminNeverRepeatsAKey: a key or its hash pasted where a key id
// belongs, with white space or invisible characters around it, percent-
// encoded or not, in the path, a parameter's value or its name, is refused
// with 400, and neither the answer nor any log line (Caddy's own admin log,
// with the filter README.md gives) holds it. A real id with the same
// clutter around it is refused too, never trimmed into the real id.
func TestAdminNeverRepeatsAKey(t *testing.T) {
	g := startOpsGatewayWithLog(t, nil, adminURIFilter)
	k := g.keys["reader"]
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
			code, body := gatewaytest.Admin(t, req[0], g.admin, req[1])
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
	// TestAdminResolvesTheExactID).
	if code, body := gatewaytest.Admin(t, "DELETE", g.admin, "/apikey/quota/%20k_ops_reader%0A"); code != 400 || !strings.Contains(body, "white space") {
		t.Errorf("quota reset of \" k_ops_reader\\n\": %d %s", code, body)
	}
	if code, body := gatewaytest.Admin(t, "POST", g.admin, "/apikey/cache/purge?id=%09k_ops_writer"); code != 400 || !strings.Contains(body, "U+0009") {
		t.Errorf("purge of \"\\tk_ops_writer\": %d %s", code, body)
	}
	// An unknown id that is not shaped like a key is named in the answer.
	if code, body := gatewaytest.Admin(t, "POST", g.admin, "/apikey/keys/k_nobody/revoke"); code != 404 || !strings.Contains(body, "k_nobody") {
		t.Errorf("unknown id: %d %s", code, body)
	}

	logs := gatewaytest.WaitForLog(t, g.caddyLog, `"uri":"/apikey/keys/k_nobody/revoke"`)
	if !strings.Contains(logs, "REDACTED") || !strings.Contains(logs, `"msg":"request error"`) {
		t.Error("the admin log does not show the refused requests, redacted")
	}
	if leaks(logs, k) {
		t.Errorf("Caddy's log holds key %s or its hash", k.Record.ID)
	}
	if readme, _ := os.ReadFile("README.md"); !strings.Contains(string(readme), "\t\t\t"+adminURIFilter+"\n") {
		t.Error("README.md does not give the admin log filter this test uses")
	}
	audit, _ := os.ReadFile(g.auditLog)
	if leaks(string(audit), k) {
		t.Errorf("the audit log holds key %s or its hash", k.Record.ID)
	}
}

// leaks reports whether text holds a key, a tell-tale part of it, or its
// hash, in any case.
func leaks(text string, k gatewaytest.Key) bool {
	lower := strings.ToLower(text)
	hash := strings.TrimPrefix(k.Record.Hash, "sha256:")
	return strings.Contains(lower, strings.ToLower(k.Secret[len(k.Secret)-16:])) || strings.Contains(lower, hash[:16])
}

// TestAdminKeysUntypedRecord: a record without "type" is listed with its
// quota under each type's limit, since the prefix of the key presented
// decides which the gateway enforces; a typed record keeps one quota.
func TestAdminKeysUntypedRecord(t *testing.T) {
	untyped := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_untyped", Role: "reader"})
	typed := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_typed", Type: "dev", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, untyped.Record, typed.Record)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		quota dev 5/day
		quota prod 50/day
		failed_auth_limit off
		counters memory {
			file %s
		}
	}
	respond "ok"
}`, adminPort, port, keyFile, filepath.Join(t.TempDir(), "counters.json")))
	base := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	var enforced string
	for range 2 {
		r := gatewaytest.Send(t, "GET", base, untyped.Bearer()...)
		if r.Status != 200 {
			t.Fatalf("untyped prod key: %d %s", r.Status, r.Body)
		}
		enforced = r.Header.Get("X-RateLimit-Limit")
	}
	gatewaytest.Send(t, "GET", base, typed.Bearer()...)

	code, body := gatewaytest.Admin(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", adminPort), "/apikey/keys")
	if code != 200 {
		t.Fatalf("GET /apikey/keys: %d %s", code, body)
	}
	type use struct{ Limit, Used, Remaining int64 }
	var got struct {
		Keys []struct {
			ID          string          `json:"id"`
			Quota       *use            `json:"quota"`
			QuotaByType map[string]*use `json:"quota_by_type"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range got.Keys {
		switch k.ID {
		case "k_untyped":
			if k.Quota != nil {
				t.Errorf("k_untyped shows one quota, limit %d, while the gateway enforces %s for the key presented", k.Quota.Limit, enforced)
			}
			prod, dev := k.QuotaByType["prod"], k.QuotaByType["dev"]
			if prod == nil || dev == nil || fmt.Sprint(prod.Limit) != enforced || *prod != (use{50, 2, 48}) || *dev != (use{5, 2, 3}) {
				t.Errorf("k_untyped quota by type: prod %+v, dev %+v; the gateway enforces %s", prod, dev, enforced)
			}
		case "k_typed":
			if k.Quota == nil || *k.Quota != (use{5, 1, 4}) || k.QuotaByType != nil {
				t.Errorf("k_typed: quota %+v, by type %v", k.Quota, k.QuotaByType)
			}
		}
	}
}

// startOpsGatewayWithLog is startOpsGateway with Caddy's log, at INFO,
// written to a file with the given filter fields. before, when not nil,
// runs before Caddy starts.
func startOpsGatewayWithLog(t *testing.T, before func(*opsGateway), filters ...string) *opsLogGateway {
	t.Helper()
	g := &opsLogGateway{caddyLog: filepath.Join(t.TempDir(), "caddy.log")}
	if len(filters) == 0 {
		filters = []string{"request>headers>X-Api-Key delete"}
	}
	g.opsGateway = startOpsGatewayConfig(t, before, func(cfg string) string {
		return strings.Replace(cfg, "persist_config off", fmt.Sprintf(`persist_config off
	log {
		output file %s
		level INFO
		format filter {
			%s
		}
	}`, g.caddyLog, strings.Join(filters, "\n\t\t\t")), 1)
	})
	return g
}

type opsLogGateway struct {
	*opsGateway
	caddyLog string
}

// startOpsGatewayConfig starts the opsGateway's config as edit changes it,
// after running before (when not nil).
func startOpsGatewayConfig(t *testing.T, before func(*opsGateway), edit func(string) string) *opsGateway {
	t.Helper()
	dir := t.TempDir()
	now := time.Now().UTC()
	g := &opsGateway{keyFile: filepath.Join(dir, "keys.json"), auditLog: filepath.Join(dir, "audit.log"),
		usage: filepath.Join(dir, "usage.json"), keys: map[string]gatewaytest.Key{}}
	g.keys["reader"] = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ops_reader", Type: "dev", Role: "reader", Services: []string{"ollama"}, QuotaPerDay: int64p(100)})
	g.keys["writer"] = gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_ops_writer", Type: "prod", Role: "writer", Services: []string{"*"}})
	g.keys["revoked"] = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ops_revoked", Role: "reader", Revoked: true,
		ExpiresAt: now.Add(24 * time.Hour).Format(time.RFC3339)})
	writeKeyFileAtomic(t, g.keyFile, g.keys["reader"].Record, g.keys["writer"].Record, g.keys["revoked"].Record)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	g.config = edit(opsSite(port, adminPort, g.keyFile, g.auditLog, g.usage, filepath.Join(dir, "counters.json"), ""))
	if before != nil {
		before(g)
	}
	gatewaytest.Start(t, g.config)
	return g
}
