package apikey

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestCLIDanglingLinkRace: `caddy apikey new` run 8 times at once through a
// link whose target does not exist yet (race/link.json ->
// ../real/keys.json), 8 times through a second link to that link
// (other/link2.json -> ../race/link.json) and 8 times through the target
// itself. Every process locks and writes the target, so all 24 records end
// up in real/keys.json and both links stay links. (Before, the links were
// replaced by regular files and the records split over three files.)
func TestCLIDanglingLinkRace(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links")
	}
	bin := gatewaytest.CaddyBinary(t)
	dir := t.TempDir()
	for _, d := range []string{"real", "race", "other"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../real/keys.json", filepath.Join(dir, "race", "link.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../race/link.json", filepath.Join(dir, "other", "link2.json")); err != nil {
		t.Fatal(err)
	}

	const each = 8
	var wg sync.WaitGroup
	errs := make(chan string, 3*each)
	for n, path := range []string{"race/link.json", "real/keys.json", "other/link2.json"} {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(bin, "apikey", "new", "--keys", path, "--type", "dev", "--role", "reader", "--id", fmt.Sprintf("k_%d_%d", n, i))
				cmd.Dir = dir
				var errOut bytes.Buffer
				cmd.Stderr = &errOut
				if err := cmd.Run(); err != nil {
					errs <- fmt.Sprintf("new --keys %s: %v: %s", path, err, errOut.String())
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	real := filepath.Join(dir, "real", "keys.json")
	if info, err := os.Lstat(real); err != nil || !info.Mode().IsRegular() {
		t.Fatalf("real/keys.json is not a regular file: %v", err)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	records, err := keystore.ParseRecords(data)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range records {
		ids[r.ID] = true
	}
	if len(records) != 3*each || len(ids) != 3*each {
		t.Errorf("real/keys.json holds %d records (%d ids), want %d", len(records), len(ids), 3*each)
	}
	for _, l := range []string{"race/link.json", "other/link2.json"} {
		p := filepath.Join(dir, l)
		if info, err := os.Lstat(p); err != nil || info.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer a link (%v)", l, err)
		} else if got, err := filepath.EvalSymlinks(p); err != nil || got != real {
			t.Errorf("%s leads to %q (%v)", l, got, err)
		}
	}
}

// TestCLIRefusesKeyAsID: an --id that is a key (pasted in the wrong place,
// perhaps with spaces or a label around it) or a key's hash is refused by
// new, rotate and revoke before anything else, and no output repeats it;
// the key file is left as it was.
func TestCLIRefusesKeyAsID(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	key := newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_real")
	prodKey, _ := keystore.Generate(keystore.Prod)
	hash := keystore.Sum(key).Encode() // sha256:<64 hex digits>
	hexOnly := strings.TrimPrefix(hash, "sha256:")
	before, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	ids := map[string]string{ // the id given: the secret part that must not be repeated
		key:                 key,
		prodKey:             prodKey,
		" " + key + "\n":    key,
		"Bearer " + key:     key,
		hash:                hexOnly,
		"SHA256:" + hexOnly: hexOnly,
		hexOnly:             hexOnly,
	}
	for id, secret := range ids {
		for _, args := range [][]string{
			{"revoke", "--keys", keyFile, "--id", id},
			{"rotate", "--keys", keyFile, "--id", id},
			{"new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", id},
		} {
			out, errOut, code := cli(t, "", args...)
			if code != 1 || strings.Contains(out+errOut, secret) || !strings.Contains(errOut, "looks like a key") {
				t.Errorf("%s --id <key or hash>: exit %d, stdout %q, stderr %q", args[0], code, out, errOut)
			}
		}
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(before, after) {
		t.Error("the key file changed")
	}
	// An ordinary id still works.
	if _, errOut, code := cli(t, "", "revoke", "--keys", keyFile, "--id", "k_real"); code != 0 {
		t.Errorf("revoke --id k_real: exit %d, %s", code, errOut)
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
	newKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_1", "--audit-log", auditLog)
	out, errOut, code := cli(t, "", "audit", "head", auditLog)
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
		out, errOut, code := cli(t, "", "audit", "verify", "--head", c.head, auditLog)
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
		out, errOut, code := cli(t, "", "audit", "verify", "--head", c.head, auditLog)
		if code != 0 || errOut != "" {
			t.Errorf("--head %s: exit %d, stderr %q", c.name, code, errOut)
		}
		wholeLines(c.name, out, 3) // the chain, the recorded head, the head given
		if !strings.HasSuffix(out, "the head "+c.shown+" is in the log\n") {
			t.Errorf("--head %s: %q", c.name, out)
		}
	}
}
