package command_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestCLIAuditVerifyFindsTampering edits a line of a real audit log.
func TestCLIAuditVerifyFindsTampering(t *testing.T) {
	dir := t.TempDir()
	keyFile, auditLog := filepath.Join(dir, "keys.json"), filepath.Join(dir, "audit.log")
	for i := 0; i < 3; i++ {
		gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", fmt.Sprintf("k_%d", i), "--audit-log", auditLog)
	}
	data, _ := os.ReadFile(auditLog)
	os.WriteFile(auditLog, bytes.Replace(data, []byte(`"key_id":"k_1"`), []byte(`"key_id":"k_9"`), 1), 0o600)
	_, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog)
	if code != 1 || !strings.Contains(errOut, "line 3: does not follow line 2") {
		t.Errorf("tampered log: exit %d, %q", code, errOut)
	}
}

// TestCLIAuditVerifyHeadOutput: whatever --head is given, audit verify's
// output is whole lines: a refusal is one line on stderr, ending with a
// newline, and what it says of a head it checked is the head as read, not
// the text given (a head copied with a line break or carriage return would
// otherwise break its line in two). An empty --head (from an empty file,
// say) is refused, not skipped.
func TestCLIAuditVerifyHeadOutput(t *testing.T) {
	dir := t.TempDir()
	keyFile, auditLog := filepath.Join(dir, "keys.json"), filepath.Join(dir, "audit.log")
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_1", "--audit-log", auditLog)
	out, errOut, code := gatewaytest.CLI(t, "", "audit", "head", auditLog)
	if code != 0 {
		t.Fatalf("audit head: exit %d %s", code, errOut)
	}
	head := strings.TrimSpace(out)
	sum := head[strings.IndexByte(head, ':')+1:]
	zeros := strings.Repeat("0", 64)

	wholeLines := func(name, s string, lines int) {
		t.Helper()
		if s == "" && lines == 0 {
			return
		}
		if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != lines || strings.ContainsAny(s, "\r\x00") {
			t.Errorf("--head %s: want %d whole line(s), got %q", name, lines, s)
		}
	}
	for _, c := range []struct {
		name, head string
	}{
		{"empty", ""},
		{"blank", " \n"},
		{"wrong", "wrong"},
		{"wrong with a line break", "wrong\nmore"},
		{"not in the log", "1:" + zeros},
		{"past the end", "5:" + sum},
		{"a bare sha256 not in the log", strings.Repeat("ab", 32) + "\r\n"},
	} {
		out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", "--head", c.head, auditLog)
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "Error: ") {
			t.Errorf("--head %s: exit %d, stdout %q, stderr %q", c.name, code, out, errOut)
		}
		wholeLines(c.name, errOut, 1)
	}
	for _, c := range []struct {
		name, head, shown string
	}{
		{"with a carriage return", head + "\r", head},
		{"with a line break", head + "\n", head},
		{"bare, with spaces", " " + sum + " \r\n", sum},
	} {
		out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", "--head", c.head, auditLog)
		if code != 0 || errOut != "" {
			t.Errorf("--head %s: exit %d, stderr %q", c.name, code, errOut)
		}
		wholeLines(c.name, out, 3) // the chain, the recorded head, the head given
		if !strings.HasSuffix(out, "the head "+c.shown+" is in the log\n") {
			t.Errorf("--head %s: %q", c.name, out)
		}
	}
}

// chainLine appends a line to the log at path chained to its last line, as
// any release writes it; fields are the line's own (a "v", or none).
func chainLine(t *testing.T, path string, fields string) {
	t.Helper()
	data, _ := os.ReadFile(path)
	prev := strings.Repeat("0", 64)
	if len(data) > 0 {
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		sum := sha256.Sum256([]byte(lines[len(lines)-1]))
		prev = hex.EncodeToString(sum[:])
	}
	data = fmt.Appendf(data, `{%s,"prev":%q}`+"\n", fields, prev)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLIAuditLogFormats: audit verify checks a log that v0.1.0 wrote
// (lines without "v") and the lines this release writes after them; a line
// of a newer format is refused, by audit verify with an error naming the
// file, the line and both formats, and by a command writing to the log,
// which leaves it as it was.
func TestCLIAuditLogFormats(t *testing.T) {
	dir := t.TempDir()
	keyFile, auditLog := filepath.Join(dir, "keys.json"), filepath.Join(dir, "audit.log")
	chainLine(t, auditLog, `"actor":"cli","event":"key.created","key_id":"k_old","ts":"2026-12-02T10:00:00Z"`)
	chainLine(t, auditLog, `"actor":"cli","event":"key.revoked","key_id":"k_old","ts":"2026-12-02T10:01:00Z"`)
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_1", "--audit-log", auditLog)
	out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog)
	if code != 0 || !strings.Contains(out, "3 lines") {
		t.Fatalf("a log of v0.1.0 written on: exit %d, %q %q", code, out, errOut)
	}

	chainLine(t, auditLog, `"event":"key.created","key_id":"k_2","v":2`)
	os.Remove(auditLog + ".head") // a writer of format 2 records its own
	_, errOut, code = gatewaytest.CLI(t, "", "audit", "verify", auditLog)
	want := "Error: " + auditLog + ": line 4 is format 2; this caddy-apikey reads audit logs up to format 1: upgrade caddy-apikey\n"
	if code != 1 || errOut != want {
		t.Errorf("a line of format 2: exit %d, %q, want %q", code, errOut, want)
	}
	before, _ := os.ReadFile(auditLog)
	_, errOut, code = gatewaytest.CLI(t, "", "new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_3", "--audit-log", auditLog)
	want = "Error: audit log " + auditLog + ": its last line is format 2; this caddy-apikey writes audit logs up to format 1: upgrade caddy-apikey; nothing was changed\n"
	if code != 1 || errOut != want {
		t.Errorf("new after a line of format 2: exit %d, %q, want %q", code, errOut, want)
	}
	if keys, _ := os.ReadFile(keyFile); strings.Contains(string(keys), "k_3") {
		t.Error("the key was made, though the audit log could not record it")
	}
	if after, _ := os.ReadFile(auditLog); !bytes.Equal(before, after) {
		t.Errorf("the log was changed:\n%s", after)
	}
}
