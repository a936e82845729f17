package apikey

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/flock"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// auditLines reads an audit log's lines.
func auditLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// TestAuditSurvivesATornLineAndWriteFailures: a running Caddy whose audit
// log ends in a torn line (a full disk cut the last write short) goes on
// auditing: the torn line is closed off and kept, a recovery entry follows,
// and `caddy apikey audit verify` accepts the log but not an edit of the
// torn line. While the log cannot be written at all, refusals are kept and
// written once it can; the failures are counted, and logged once per
// interval rather than once per try.
func TestAuditSurvivesATornLineAndWriteFailures(t *testing.T) {
	const torn = `{"actor":"admin_api","event":"key.rev`
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{Log: true, Before: func(g *gatewaytest.Ops) {
		if err := audit.Append(g.AuditLog, audit.Entry{"event": "key.created", "key_id": "k_a"}, audit.Entry{"event": "key.created", "key_id": "k_b"}); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(g.AuditLog, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(torn)
		f.Close()
	}})
	refuse := func() {
		t.Helper()
		if r := gatewaytest.Send(t, "GET", g.Base+"/ollama/api/tags", g.Keys["revoked"].Bearer()...); r.Status != 401 {
			t.Fatalf("revoked key: %d", r.Status)
		}
	}
	refuse()
	gatewaytest.WaitForLog(t, g.AuditLog, `"decision":"revoked_key"`)
	lines := auditLines(t, g.AuditLog)
	if len(lines) != 5 || lines[2] != torn {
		t.Fatalf("line 3 of %d is %q, want the torn line kept", len(lines), lines[2])
	}
	if !strings.Contains(lines[3], `"event":"audit.recovered"`) || !strings.Contains(lines[3], `"torn_line":3`) ||
		!strings.Contains(lines[4], `"event":"request.denied"`) {
		t.Fatalf("after the torn line:\n%s\n%s", lines[3], lines[4])
	}
	out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", g.AuditLog)
	if code != 0 || !strings.Contains(out, "5 lines, chain intact") || !strings.Contains(out, "torn line(s)") || !strings.Contains(out, "[3]") {
		t.Fatalf("audit verify of the recovered log: exit %d\n%s%s", code, out, errOut)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.log")
	data, _ := os.ReadFile(g.AuditLog)
	os.WriteFile(tampered, []byte(strings.Replace(string(data), torn, strings.Replace(torn, "admin_api", "key_file", 1), 1)), 0o600)
	if _, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", tampered); code != 1 || !strings.Contains(errOut, "line 3") {
		t.Errorf("an edited torn line: exit %d, %s", code, errOut)
	}

	// The log's place is taken by a folder: appends fail for a while.
	errors0 := audit.WriteErrors()
	away := g.AuditLog + ".away"
	if err := os.Rename(g.AuditLog, away); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(g.AuditLog, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		refuse()
		time.Sleep(time.Second)
	}
	if n := audit.WriteErrors() - errors0; n < 2 {
		t.Errorf("%d write failures counted in 3 s of retries", n)
	}
	// Put the log back under the writers' lock, as the commands change it:
	// between the folder's removal and the rename, a retry would otherwise
	// start a new log there, which the rename would then replace.
	unlock, err := flock.Lock(g.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(g.AuditLog)
	if err := os.Rename(away, g.AuditLog); err != nil {
		t.Fatal(err)
	}
	unlock()
	gatewaytest.WaitForLogCount(t, g.AuditLog, `"decision":"revoked_key"`, 4)
	logs := gatewaytest.WaitForLog(t, g.CaddyLog, "writing the audit log works again")
	if n := strings.Count(logs, "writing the audit log failed; retrying"); n != 1 {
		t.Errorf("the failure was logged %d times in 3 s, want once", n)
	}
	if out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", g.AuditLog); code != 0 || !strings.Contains(out, "8 lines, chain intact") {
		t.Errorf("audit verify after the failures: exit %d\n%s%s", code, out, errOut)
	}
}

// TestAuditHeadFindsCuts: `caddy apikey audit head` prints the head its
// writers record; `audit verify` fails on a log cut at a line boundary or
// emptied, against the head file beside it or a head recorded elsewhere
// (--head), and a writer that finds the log cut records that in the log;
// `audit rotate` starts a new log cleanly.
func TestAuditHeadFindsCuts(t *testing.T) {
	dir := t.TempDir()
	keyFile, auditLog := filepath.Join(dir, "keys.json"), filepath.Join(dir, "audit.log")
	for i := range 3 {
		gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", fmt.Sprintf("k_%d", i), "--audit-log", auditLog)
	}
	out, errOut, code := gatewaytest.CLI(t, "", "audit", "head", auditLog)
	head := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(head, "3:") || len(head) != 66 {
		t.Fatalf("audit head: exit %d %q %s", code, out, errOut)
	}
	out, _, code = gatewaytest.CLI(t, "", "audit", "verify", "--head", head, auditLog)
	if code != 0 || !strings.Contains(out, "head "+head) || !strings.Contains(out, "audit.log.head") {
		t.Fatalf("audit verify of the whole log: exit %d\n%s", code, out)
	}

	whole, _ := os.ReadFile(auditLog)
	cut := whole[:strings.LastIndex(strings.TrimSuffix(string(whole), "\n"), "\n")+1]
	elsewhere := filepath.Join(t.TempDir(), "copy.log") // a copy without the head file
	for name, c := range map[string]struct {
		path, content string
		args          []string
		want          string
	}{
		"last line cut":                   {auditLog, string(cut), nil, "lines were cut from the end"},
		"emptied":                         {auditLog, "", nil, "the log has 0 lines"},
		"last line cut, --head":           {elsewhere, string(cut), []string{"--head", head}, "lines were cut from the end"},
		"last line cut, --head sha256":    {elsewhere, string(cut), []string{"--head", head[2:]}, "no line has the recorded head's sha256"},
		"whole, another log's --head":     {elsewhere, string(whole), []string{"--head", "3:" + strings.Repeat("a", 64)}, "line 3: is not the recorded head"},
		"emptied, --head, no head beside": {elsewhere, "", []string{"--head", head}, "the log has 0 lines"},
	} {
		os.WriteFile(c.path, []byte(c.content), 0o600)
		_, errOut, code := gatewaytest.CLI(t, "", append(append([]string{"audit", "verify"}, c.args...), c.path)...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, %q; want %q", name, code, errOut, c.want)
		}
	}

	// A writer that finds the log cut says so; verification fails on it.
	os.WriteFile(auditLog, cut, 0o600)
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_after_cut", "--audit-log", auditLog)
	lines := auditLines(t, auditLog)
	if !strings.Contains(lines[2], `"event":"audit.truncated"`) || !strings.Contains(lines[2], `"head_lines":3`) {
		t.Fatalf("line 3 after the cut: %s", lines[2])
	}
	if _, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog); code != 1 || !strings.Contains(errOut, "line 3: the log's writer found it cut here") {
		t.Errorf("verify after a cut and a write: exit %d %s", code, errOut)
	}

	// Rotating moves the log and its head together: the next line starts a
	// new log that verifies, and the old one still does.
	out, errOut, code = gatewaytest.CLI(t, "", "audit", "rotate", auditLog)
	if code != 0 || !strings.HasPrefix(out, "4:") {
		t.Fatalf("audit rotate: exit %d %q %s", code, out, errOut)
	}
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_after_rotation", "--audit-log", auditLog)
	if out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog); code != 0 || !strings.Contains(out, "1 lines, chain intact") {
		t.Errorf("verify of the new log: exit %d\n%s%s", code, out, errOut)
	}
}
