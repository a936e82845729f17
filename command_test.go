package apikey

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// cli runs `caddy apikey ...` from the built binary.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(gatewaytest.CaddyBinary(t), append([]string{"apikey"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// newKeyByCLI runs `caddy apikey new` and returns the printed key.
func newKeyByCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, "", append([]string{"new"}, args...)...)
	if code != 0 {
		t.Fatalf("apikey new: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("apikey new printed %d lines on stdout, want the key alone", len(lines))
	}
	if _, ok := keystore.Check(lines[0]); !ok {
		t.Fatal("apikey new printed something that is not a valid key")
	}
	if !strings.Contains(errOut, "shown once") {
		t.Errorf("stderr does not say the key is shown once: %q", errOut)
	}
	return lines[0]
}

// startFileGateway runs Caddy in front of a key file the CLI edits.
func startFileGateway(t *testing.T, keyFile string) string {
	t.Helper()
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		service ollama
		failed_auth_limit off
		counters memory {
			file %s
		}
	}
	respond "admitted {http.apikey.id}"
}`, port, keyFile, filepath.Join(t.TempDir(), "counters.json")))
	return fmt.Sprintf("http://127.0.0.1:%d/api/tags", port)
}

// TestCLIKeyLifecycle: a key made by the CLI works against a running Caddy;
// rotation keeps the old secret in grace; revocation stops it; list never
// shows hashes.
func TestCLIKeyLifecycle(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	auditLog := filepath.Join(dir, "audit.log")
	key := newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "writer", "--id", "k_cli",
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

	url := startFileGateway(t, keyFile)
	if r := gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: key}.Bearer()...); r.Status != 200 || r.Body != "admitted k_cli" {
		t.Fatalf("the printed key against Caddy: %d %q", r.Status, r.Body)
	}

	// A second key without --id gets a generated one.
	other := newKeyByCLI(t, "--keys", keyFile, "--type", "prod", "--role", "reader", "--services", "*")
	eventually(t, "the second key works", func() bool { return gatewaytest.Send(t, "GET", url, "X-API-Key", other).Status == 200 })

	// Rotate: a new secret; the old one works, deprecated, for the grace.
	out, errOut, code := cli(t, "", "rotate", "--keys", keyFile, "--id", "k_cli", "--grace", "1h", "--audit-log", auditLog)
	newSecret := strings.TrimSpace(out)
	if code != 0 || !strings.Contains(errOut, "shown once") {
		t.Fatalf("rotate: exit %d %s", code, errOut)
	}
	if typ, ok := keystore.Check(newSecret); !ok || typ != keystore.Dev || newSecret == key {
		t.Fatal("rotate did not print a new dev key")
	}
	eventually(t, "the rotated secret works", func() bool {
		return gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: newSecret}.Bearer()...).Status == 200
	})
	if r := gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: key}.Bearer()...); r.Status != 200 || r.Header.Get("Deprecation") != "true" {
		t.Errorf("old secret in grace: %d, Deprecation %q", r.Status, r.Header.Get("Deprecation"))
	}

	// List: statuses, never a hash.
	for _, args := range [][]string{{"list", "--keys", keyFile}, {"list", "--keys", keyFile, "--json"}} {
		out, _, code := cli(t, "", args...)
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
	if _, errOut, code := cli(t, "", "revoke", "--keys", keyFile, "--id", "k_cli", "--audit-log", auditLog); code != 0 {
		t.Fatalf("revoke: exit %d %s", code, errOut)
	}
	eventually(t, "the revoked key is refused", func() bool {
		r := gatewaytest.Send(t, "GET", url, gatewaytest.Key{Secret: newSecret}.Bearer()...)
		return r.Status == 401 && r.Err.Code == "revoked_key"
	})

	// The audit log has the three changes, chained, and no secret.
	out, errOut, code = cli(t, "", "audit", "verify", auditLog)
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

// TestCLIRefusesAndLeavesTheFile: unknown or taken ids, bad values and an
// invalid file give exit 1 and leave the file byte for byte as it was.
func TestCLIRefusesAndLeavesTheFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_one")
	before, _ := os.ReadFile(keyFile)
	for name, args := range map[string][]string{
		"taken id":            {"new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_one"},
		"bad role":            {"new", "--keys", keyFile, "--type", "dev", "--role", "owner"},
		"bad type":            {"new", "--keys", keyFile, "--type", "test", "--role", "reader"},
		"custom without perm": {"new", "--keys", keyFile, "--type", "dev", "--role", "custom"},
		"bad cidr":            {"new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--allowed-ip", "300.0.0.1"},
		"bad expires":         {"new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--expires", "someday"},
		"rotate unknown":      {"rotate", "--keys", keyFile, "--id", "k_nobody"},
		"revoke unknown":      {"revoke", "--keys", keyFile, "--id", "k_nobody"},
	} {
		out, errOut, code := cli(t, "", args...)
		if code != 1 {
			t.Errorf("%s: exit %d, want 1", name, code)
		}
		if out != "" {
			t.Errorf("%s: printed %q on stdout", name, out)
		}
		if errOut == "" {
			t.Errorf("%s: no message", name)
		}
		if after, _ := os.ReadFile(keyFile); !bytes.Equal(before, after) {
			t.Errorf("%s: the file changed", name)
		}
	}

	// An invalid file is left alone.
	broken := []byte(`{"keys": [{"id": "k_x", "hash": "sha256:00", "role": "reader"}]}`)
	os.WriteFile(keyFile, broken, 0o600)
	_, errOut, code := cli(t, "", "revoke", "--keys", keyFile, "--id", "k_x")
	if after, _ := os.ReadFile(keyFile); code != 1 || !bytes.Equal(after, broken) || !strings.Contains(errOut, `keys[0] (id "k_x"): hash`) {
		t.Errorf("invalid file: exit %d, message %q", code, errOut)
	}
}

// TestCLIKeepsWhatItDoesNotTouch: other records, field order and the file
// mode survive a change.
func TestCLIKeepsWhatItDoesNotTouch(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	a := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	b := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{})
	content := `{"keys": [
  {"role": "custom", "id": "k_a", "permissions": ["GET /api/*"], "hash": "` + a.Record.Hash + `", "name": "Alpha", "allowed_ips": ["203.0.113.0/24"]},
  {"id": "k_b", "hash": "` + b.Record.Hash + `", "role": "admin", "type": "prod", "services": ["*"], "expires_at": "2099-01-01T00:00:00Z"}
]}`
	os.WriteFile(keyFile, []byte(content), 0o640)
	if _, errOut, code := cli(t, "", "revoke", "--keys", keyFile, "--id", "k_b"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	data, _ := os.ReadFile(keyFile)
	if info, _ := os.Stat(keyFile); info.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", info.Mode().Perm())
	}
	wantA := `{"role":"custom","id":"k_a","permissions":["GET /api/*"],"hash":"` + a.Record.Hash + `","name":"Alpha","allowed_ips":["203.0.113.0/24"]}`
	wantB := `{"id":"k_b","hash":"` + b.Record.Hash + `","role":"admin","type":"prod","services":["*"],"expires_at":"2099-01-01T00:00:00Z","revoked":true}`
	if !strings.Contains(string(data), wantA) || !strings.Contains(string(data), wantB) {
		t.Errorf("records changed beyond the revocation:\n%s", data)
	}
}

// TestCLIConcurrentWritersLoseNothing runs several `new` at once.
func TestCLIConcurrentWritersLoseNothing(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	const n = 6
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, errOut, code := cli(t, "", "new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", fmt.Sprintf("k_%d", i)); code != 0 {
				t.Errorf("writer %d: %s", i, errOut)
			}
		}()
	}
	wg.Wait()
	set, err := keyfile.LoadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != n {
		t.Fatalf("%d keys after %d concurrent writers", set.Len(), n)
	}
}

// TestCLICheckAndHash read the key from stdin.
func TestCLICheckAndHash(t *testing.T) {
	k, _ := keystore.Generate(keystore.Prod)
	if out, _, code := cli(t, k+"\n", "check"); code != 0 || !strings.Contains(out, "valid prod key") {
		t.Errorf("check: %d %q", code, out)
	}
	if out, _, code := cli(t, k+"\n", "hash"); code != 0 || strings.TrimSpace(out) != keystore.Sum(k).Encode() {
		t.Errorf("hash: %d %q", code, out)
	}
	bad := k[:len(k)-1] + "!"
	for _, cmd := range []string{"check", "hash"} {
		out, errOut, code := cli(t, bad+"\n", cmd)
		if code != 1 || out != "" || !strings.Contains(errOut, "invalid key") {
			t.Errorf("%s on a bad key: exit %d, out %q, err %q", cmd, code, out, errOut)
		}
		if strings.Contains(errOut, bad) {
			t.Errorf("%s repeats the key in its error", cmd)
		}
	}
	if _, errOut, code := cli(t, "DEV_API_short\n", "check"); code != 1 || !strings.Contains(errOut, "wrong length") {
		t.Errorf("check on a short key: %d %q", code, errOut)
	}
}

// TestCLIAuditVerifyFindsTampering edits a line of a real audit log.
func TestCLIAuditVerifyFindsTampering(t *testing.T) {
	dir := t.TempDir()
	keyFile, auditLog := filepath.Join(dir, "keys.json"), filepath.Join(dir, "audit.log")
	for i := 0; i < 3; i++ {
		newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", fmt.Sprintf("k_%d", i), "--audit-log", auditLog)
	}
	data, _ := os.ReadFile(auditLog)
	os.WriteFile(auditLog, bytes.Replace(data, []byte(`"key_id":"k_1"`), []byte(`"key_id":"k_9"`), 1), 0o600)
	_, errOut, code := cli(t, "", "audit", "verify", auditLog)
	if code != 1 || !strings.Contains(errOut, "line 3: does not follow line 2") {
		t.Errorf("tampered log: exit %d, %q", code, errOut)
	}
}

// TestCLINeverTakesAKeyFromArgv: check and hash refuse arguments, without
// repeating them.
func TestCLINeverTakesAKeyFromArgv(t *testing.T) {
	k, _ := keystore.Generate(keystore.Dev)
	for _, cmd := range []string{"check", "hash"} {
		out, errOut, code := cli(t, "", cmd, k)
		if code != 1 || strings.Contains(out+errOut, k) || !strings.Contains(errOut, "stdin") {
			t.Errorf("%s with the key as an argument: exit %d, output %q %q", cmd, code, out, errOut)
		}
	}
	// An id shaped like a key is refused too: ids are logged.
	if _, errOut, code := cli(t, "", "new", "--keys", filepath.Join(t.TempDir(), "k.json"), "--type", "dev", "--role", "reader", "--id", k); code != 1 || strings.Contains(errOut, k) {
		t.Errorf("a key as --id: exit %d, %q", code, errOut)
	}
}

// TestCLIKeepsOwnerAndMakesFolders: a change made by root keeps the key
// file's owner, so the server can still read it; the audit log and key file
// may be in folders that do not exist yet.
func TestCLIKeepsOwnerAndMakesFolders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root (CI runs as root)")
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "new", "folder", "keys.json")
	auditLog := filepath.Join(dir, "logs", "audit", "apikey.log")
	newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_owned", "--audit-log", auditLog)
	if _, err := os.Stat(auditLog); err != nil {
		t.Fatalf("audit log in a new folder: %v", err)
	}
	const nobody = 65534
	if err := os.Chown(keyFile, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, "", "revoke", "--keys", keyFile, "--id", "k_owned"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	info, _ := os.Stat(keyFile)
	if st := info.Sys().(*syscall.Stat_t); st.Uid != nobody || st.Gid != nobody {
		t.Errorf("owner %d:%d after the change, want %d:%d", st.Uid, st.Gid, nobody, nobody)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"plain name": "plain name", "a\x1b[31mred": `a\x1b[31mred`, "a\nb": `a\nb`, "a\u202eb": `a\u202eb`, "ünï": "ünï"} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCLIRotateRefusesARevokedKey: a new secret for a revoked key would be
// refused everywhere; rotate says so and prints no key, and the file keeps
// the record as it was.
func TestCLIRotateRefusesARevokedKey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_gone")
	if _, errOut, code := cli(t, "", "revoke", "--keys", keyFile, "--id", "k_gone"); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	before, _ := os.ReadFile(keyFile)
	out, errOut, code := cli(t, "", "rotate", "--keys", keyFile, "--id", "k_gone")
	if code != 1 || out != "" || !strings.Contains(errOut, "is revoked") {
		t.Fatalf("rotate of a revoked key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(before, after) {
		t.Fatal("rotate of a revoked key changed the key file")
	}
}
