package command_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestCLIKeyLifecycle: a key made by the CLI works against a running Caddy;
// rotation keeps the old secret in grace; revocation stops it; list never
// shows hashes.
func TestCLIKeyLifecycle(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	auditLog := filepath.Join(dir, "audit.log")
	key := gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "writer", "--id", "k_cli",
		"--name", "CLI made", "--services", "ollama,n8n", "--expires", "90d", "--quota-per-day", "1000", "--audit-log", auditLog)
	info, err := os.Stat(keyFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("new key file: %v, mode %v, want 0600", err, info.Mode())
	}
	data, _ := os.ReadFile(keyFile)
	if strings.Contains(string(data), key) || !strings.Contains(string(data), keystore.Sum(key).Encode()) {
		t.Fatal("the key file does not hold exactly the key's hash")
	}
	var doc struct {
		Keys []keystore.Record `json:"keys"`
	}
	json.Unmarshal(data, &doc)
	rec := doc.Keys[0]
	if rec.ID != "k_cli" || rec.Name != "CLI made" || rec.Role != "writer" || rec.Type != "dev" ||
		strings.Join(rec.Services, ",") != "ollama,n8n" || rec.QuotaPerDay == nil || *rec.QuotaPerDay != 1000 {
		t.Errorf("record %+v", rec)
	}
	if exp, err := time.Parse(time.RFC3339, rec.ExpiresAt); err != nil || time.Until(exp) < 89*24*time.Hour || time.Until(exp) > 91*24*time.Hour {
		t.Errorf("expires_at %q, want 90 days from now", rec.ExpiresAt)
	}

	url := gatewaytest.StartKeyFile(t, keyFile)
	if r := gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: key}.Bearer()...); r.Status != 200 || r.Body != "admitted k_cli" {
		t.Fatalf("the printed key against Caddy: %d %q", r.Status, r.Body)
	}

	// A second key without --id gets a generated one.
	other := gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "prod", "--role", "reader", "--services", "*")
	gatewaytest.WaitUntil(t, "the second key works", 2*time.Second, func() bool { return gatewaytest.Send(t, "GET", url, "X-API-Key", other).Status == 200 })

	// Rotate: a new secret; the old one works, deprecated, for the grace.
	out, errOut, code := gatewaytest.CLI(t, "", "rotate", "--keys", keyFile, "--id", "k_cli", "--grace", "1h", "--audit-log", auditLog)
	newSecret := strings.TrimSpace(out)
	if code != 0 || !strings.Contains(errOut, "shown once") {
		t.Fatalf("rotate: exit %d %s", code, errOut)
	}
	if typ, ok := keystore.Check(newSecret); !ok || typ != keystore.Dev || newSecret == key {
		t.Fatal("rotate did not print a new dev key")
	}
	gatewaytest.WaitUntil(t, "the rotated secret works", 2*time.Second, func() bool {
		return gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: newSecret}.Bearer()...).Status == 200
	})
	if r := gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: key}.Bearer()...); r.Status != 200 || r.Header.Get("Deprecation") != "true" {
		t.Errorf("old secret in grace: %d, Deprecation %q", r.Status, r.Header.Get("Deprecation"))
	}

	// List: statuses, never a hash.
	for _, args := range [][]string{{"list", "--keys", keyFile}, {"list", "--keys", keyFile, "--json"}} {
		out, _, code := gatewaytest.CLI(t, "", args...)
		if code != 0 || !strings.Contains(out, "k_cli") || !strings.Contains(out, "rotation_grace") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
		data, _ := os.ReadFile(keyFile)
		for _, h := range []string{keystore.Sum(key).Encode(), keystore.Sum(newSecret).Encode()} {
			if strings.Contains(out, strings.TrimPrefix(h, "sha256:")[:16]) || !strings.Contains(string(data), h) {
				t.Errorf("%v shows a hash", args)
			}
		}
	}

	// Revoke.
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", keyFile, "--id", "k_cli", "--audit-log", auditLog); code != 0 {
		t.Fatalf("revoke: exit %d %s", code, errOut)
	}
	gatewaytest.WaitUntil(t, "the revoked key is refused", 2*time.Second, func() bool {
		r := gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: newSecret}.Bearer()...)
		return r.Status == 401 && r.Err.Code == "revoked_key"
	})

	// The audit log has the three changes, chained, and no secret.
	out, errOut, code = gatewaytest.CLI(t, "", "audit", "verify", auditLog)
	if code != 0 || !strings.Contains(out, "3 lines, chain intact") {
		t.Fatalf("audit verify: exit %d %s %s", code, out, errOut)
	}
	logData, _ := os.ReadFile(auditLog)
	for _, want := range []string{`"event":"key.created"`, `"event":"key.rotated"`, `"event":"key.revoked"`, `"actor":"cli"`} {
		if !strings.Contains(string(logData), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	for _, secret := range []string{key, newSecret} {
		if strings.Contains(string(logData), secret) || strings.Contains(string(logData), strings.TrimPrefix(keystore.Sum(secret).Encode(), "sha256:")) {
			t.Error("the audit log holds a key or its hash")
		}
	}
}
