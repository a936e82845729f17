package apikey

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestAuditLogRollsBySize: with roll_size and roll_keep, the audit log of
// a running Caddy is moved aside once it reaches the size, the new file's
// first line chains to the last of the old one, and only roll_keep rolled
// files stay. `caddy apikey audit verify` checks the log with its rolled
// files (a head recorded in a rolled file too), and fails when a rolled
// file is edited or one between is removed.
func TestAuditLogRollsBySize(t *testing.T) {
	dir := t.TempDir()
	auditLog := filepath.Join(dir, "audit.log")
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_roll", Role: "reader", Services: []string{"*"}})
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(dir, "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	gatewaytest.Start(t, quotaSite(port, gatewaytest.WriteKeyFile(t, key.Record), g.counters, g.up.Addr(),
		"failed_auth_limit off\n\t\t\taudit_log "+auditLog+" {\n\t\t\t\troll_size 2KiB\n\t\t\t\troll_keep 3\n\t\t\t}"))
	head := func() string { data, _ := os.ReadFile(auditLog + ".head"); return string(data) }
	for i := range 90 {
		before := head()
		gatewaytest.Send(t, "GET", g.url+"/ollama/x", "X-Forwarded-For", fmt.Sprintf("192.0.2.%d", i+1))
		if i%10 == 9 { // in several batches, as traffic comes
			for deadline := time.Now().Add(5 * time.Second); head() == before && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}

	rolled, _ := filepath.Glob(auditLog + ".2*")
	var files []string
	for _, f := range rolled {
		if !strings.HasSuffix(f, ".head") {
			files = append(files, f)
		}
	}
	if len(files) != 3 {
		t.Fatalf("rolled files %v, want roll_keep's 3", files)
	}
	for _, f := range append(files, auditLog) {
		if info, err := os.Stat(f); err != nil || info.Size() > 2048+64<<10 {
			t.Errorf("%s: %v bytes, want about roll_size", f, info.Size())
		}
	}
	first := jsonLines(t, auditLog)[0]
	if first["event"] != "audit.continued" || first["previous_file"] != filepath.Base(files[2]) {
		t.Fatalf("the log's first line after a roll: %v", first)
	}

	var recorded struct {
		Lines  int64  `json:"lines"`
		SHA256 string `json:"sha256"`
	}
	data, _ := os.ReadFile(files[1] + ".head")
	if err := json.Unmarshal(data, &recorded); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", "--head", fmt.Sprintf("%d:%s", recorded.Lines, recorded.SHA256), auditLog)
	if code != 0 || strings.Count(out, "(rolled)") != 3 || !strings.Contains(out, "no longer there") {
		t.Fatalf("audit verify across rolled files: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", "--head", "2:"+strings.Repeat("b", 64), auditLog); code != 1 || !strings.Contains(errOut, "in neither the log nor its rolled files") {
		t.Errorf("a head from elsewhere: exit %d %s", code, errOut)
	}

	// An edit in a rolled file breaks its chain.
	original, _ := os.ReadFile(files[1])
	os.WriteFile(files[1], []byte(strings.Replace(string(original), "192.0.2.", "192.0.9.", 1)), 0o600)
	if _, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog); code != 1 || !strings.Contains(errOut, filepath.Base(files[1])) {
		t.Errorf("an edited rolled file: exit %d %s", code, errOut)
	}
	os.WriteFile(files[1], original, 0o600)
	// A rolled file removed between others is missed.
	os.Remove(files[1])
	if _, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog); code != 1 || !strings.Contains(errOut, "not in its chain") {
		t.Errorf("a rolled file removed: exit %d %s", code, errOut)
	}
}

// TestKeyFileChangesAreAudited: a change made to the key file by any means
// (here the CLI, without --audit-log) is recorded by the running Caddy.
func TestKeyFileChangesAreAudited(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{})
	gatewaytest.NewKeyByCLI(t, "--keys", g.KeyFile, "--type", "dev", "--role", "reader", "--id", "k_made_outside")
	logs := gatewaytest.WaitForLog(t, g.AuditLog, `"key_id":"k_made_outside"`)
	if !strings.Contains(logs, `"actor":"key_file","event":"key.created"`) {
		t.Errorf("the new key is not audited as created through the key file:\n%s", logs)
	}
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", g.KeyFile, "--id", "k_ops_writer"); code != 0 {
		t.Fatal(errOut)
	}
	logs = gatewaytest.WaitForLog(t, g.AuditLog, `"event":"key.revoked","file"`)
	if strings.Count(logs, `"event":"key.created"`) != 1 {
		t.Errorf("the creation was audited more than once (two routes share the file and the log):\n%s", logs)
	}
	if out, _, code := gatewaytest.CLI(t, "", "audit", "verify", g.AuditLog); code != 0 {
		t.Errorf("audit verify: %s", out)
	}
}
