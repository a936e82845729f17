package command_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/symlinktest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// TestCLIRefusesAndLeavesTheFile: unknown or taken ids, bad values and an
// invalid file give exit 1 and leave the file byte for byte as it was.
func TestCLIRefusesAndLeavesTheFile(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_one")
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
		out, errOut, code := gatewaytest.CLI(t, "", args...)
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
	_, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", keyFile, "--id", "k_x")
	if after, _ := os.ReadFile(keyFile); code != 1 || !bytes.Equal(after, broken) || !strings.Contains(errOut, `keys[0] (id "k_x"): hash`) {
		t.Errorf("invalid file: exit %d, message %q", code, errOut)
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
			if _, errOut, code := gatewaytest.CLI(t, "", "new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", fmt.Sprintf("k_%d", i)); code != 0 {
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
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_owned", "--audit-log", auditLog)
	if _, err := os.Stat(auditLog); err != nil {
		t.Fatalf("audit log in a new folder: %v", err)
	}
	const nobody = 65534
	if err := os.Chown(keyFile, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", keyFile, "--id", "k_owned"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	info, _ := os.Stat(keyFile)
	if st := info.Sys().(*syscall.Stat_t); st.Uid != nobody || st.Gid != nobody {
		t.Errorf("owner %d:%d after the change, want %d:%d", st.Uid, st.Gid, nobody, nobody)
	}
}

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

// sparseFile makes a file of size bytes that takes no room on disk.
func sparseFile(t *testing.T, name string, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// refusedNaming checks that a command failed, with a message on stderr that
// names the file and the cap.
func refusedNaming(t *testing.T, what string, out, errOut string, code int, path, limit string) {
	t.Helper()
	if code == 0 {
		t.Errorf("%s: exit 0, want an error", what)
	}
	if !strings.Contains(errOut, path) || !strings.Contains(errOut, limit) {
		t.Errorf("%s: the message does not name %s and the cap %s: %q", what, path, limit, errOut)
	}
	if out != "" {
		t.Errorf("%s: printed %q on stdout", what, out)
	}
}

// TestCLIReadsAreCapped: every file the commands read is read up to a cap,
// and one past it is refused with a message naming it and the cap: a key
// file (list, export, changes), a file to import, the Redis password file.
func TestCLIReadsAreCapped(t *testing.T) {
	keyCap, secretCap := capped.Size(capped.KeyFile), capped.Size(capped.Secret)
	big := sparseFile(t, "keys.json", capped.KeyFile+1)
	for name, args := range map[string][]string{
		"list":   {"list", "--keys", big},
		"export": {"export", "--keys", big},
		"revoke": {"revoke", "--keys", big, "--id", "k_one"},
		"import": {"import", big, "--redis", "127.0.0.1:1"},
	} {
		out, errOut, code := gatewaytest.CLI(t, "", args...)
		refusedNaming(t, name, out, errOut, code, big, keyCap)
	}
	password := sparseFile(t, "password", capped.Secret+1)
	out, errOut, code := gatewaytest.CLI(t, "", "list", "--redis", "127.0.0.1:1", "--redis-password-file", password)
	refusedNaming(t, "password file", out, errOut, code, password, secretCap)
}

// TestCLIMissingPathIsAnError: a read-only command (list, export, audit
// head, audit verify) or a change to a record (rotate, revoke) on a path
// that does not exist fails, naming the path, rather than printing an
// empty list or an empty backup; none of them creates the file. Only new
// creates a key file.
func TestCLIMissingPathIsAnError(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "kyes.json")
	backup := filepath.Join(dir, "backup.json")
	for name, args := range map[string][]string{
		"list":         {"list", "--keys", missing},
		"list json":    {"list", "--keys", missing, "--json"},
		"export":       {"export", "--keys", missing},
		"export out":   {"export", "--keys", missing, "--out", backup},
		"rotate":       {"rotate", "--keys", missing, "--id", "k_one"},
		"revoke":       {"revoke", "--keys", missing, "--id", "k_one"},
		"audit head":   {"audit", "head", missing},
		"audit verify": {"audit", "verify", missing},
	} {
		out, errOut, code := gatewaytest.CLI(t, "", args...)
		if code == 0 {
			t.Errorf("%s: exit 0 on a path that does not exist", name)
		}
		if out != "" {
			t.Errorf("%s: printed %q on stdout", name, out)
		}
		if !strings.Contains(errOut, missing) {
			t.Errorf("%s: the message does not name the path: %q", name, errOut)
		}
		for _, p := range []string{missing, backup} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s: made %s", name, p)
				os.Remove(p)
			}
		}
	}
	gatewaytest.NewKeyByCLI(t, "--keys", missing, "--type", "dev", "--role", "reader", "--id", "k_one")
	if out, errOut, code := gatewaytest.CLI(t, "", "list", "--keys", missing); code != 0 || !strings.Contains(out, "k_one") {
		t.Errorf("list after new: exit %d, %q %q", code, out, errOut)
	}
}

// checkNothingLost reads the key file after n added keys and a revocation
// of k_victim: every key must be there, the revocation kept, and the link
// still a link.
func checkNothingLost(t *testing.T, round int, link, target string, ids []string) {
	t.Helper()
	set, err := keyfile.LoadFile(target)
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	symlinktest.CheckNothingLost(t, round, link, set.Keys(), ids)
}

// TestSymlinkedKeyFileCommandsTakeTurns is the same race with the built
// binary: `caddy apikey new` through the link and through the target, and
// `caddy apikey revoke` through the link, all at once.
func TestSymlinkedKeyFileCommandsTakeTurns(t *testing.T) {
	for round := range 3 {
		link, target := symlinktest.KeyFile(t)
		var ids []string
		var wg sync.WaitGroup
		run := func(args ...string) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, errOut, code := gatewaytest.CLI(t, "", args...); code != 0 {
					t.Errorf("round %d: %v: exit %d: %s", round, args[:1], code, errOut)
				}
			}()
		}
		run("revoke", "--keys", link, "--id", "k_victim")
		for i := range 10 {
			viaLink, viaTarget := fmt.Sprintf("k_link_%d", i), fmt.Sprintf("k_target_%d", i)
			ids = append(ids, viaLink, viaTarget)
			run("new", "--keys", link, "--type", "dev", "--role", "reader", "--id", viaLink)
			run("new", "--keys", target, "--type", "dev", "--role", "reader", "--id", viaTarget)
		}
		wg.Wait()
		checkNothingLost(t, round, link, target, ids)
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
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", keyFile, "--id", "k_b"); code != 0 {
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
