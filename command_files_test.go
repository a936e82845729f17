package apikey

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

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
		out, errOut, code := cli(t, "", args...)
		refusedNaming(t, name, out, errOut, code, big, keyCap)
	}
	password := sparseFile(t, "password", capped.Secret+1)
	out, errOut, code := cli(t, "", "list", "--redis", "127.0.0.1:1", "--redis-password-file", password)
	refusedNaming(t, "password file", out, errOut, code, password, secretCap)
}

// TestCLIImportOfAnEndlessFile: import /dev/zero ends with an error naming
// the file and the cap, having held no more than the cap.
func TestCLIImportOfAnEndlessFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewaytest.CaddyBinary(t), "apikey", "import", "/dev/zero", "--redis", "127.0.0.1:1")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatal("import /dev/zero did not end within 2 minutes")
	}
	if err == nil {
		t.Fatal("import /dev/zero: exit 0")
	}
	if !strings.Contains(errOut.String(), "/dev/zero") || !strings.Contains(errOut.String(), capped.Size(capped.KeyFile)) {
		t.Errorf("import /dev/zero: the message does not name the file and the cap: %q", errOut.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		t.Logf("peak RSS %d MiB", ru.Maxrss>>10)
		if ru.Maxrss > 1<<20 { // KiB: 1 GiB
			t.Errorf("import /dev/zero held %d MiB", ru.Maxrss>>10)
		}
	}
}

// TestKeyFileOverTheCapFailsTheLoad: Caddy refuses a key file over the cap
// when the config loads, naming the file and the cap.
func TestKeyFileOverTheCapFailsTheLoad(t *testing.T) {
	big := sparseFile(t, "keys.json", capped.KeyFile+1)
	err := gatewaytest.Load(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
	}
	respond ok
}`, gatewaytest.Port(t), big))
	if err == nil {
		gatewaytest.Stop()
		t.Fatal("a key file over the cap loaded")
	}
	if !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), capped.Size(capped.KeyFile)) {
		t.Errorf("the error does not name the file and the cap: %v", err)
	}
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
		out, errOut, code := cli(t, "", args...)
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
	newKeyByCLI(t, "--keys", missing, "--type", "dev", "--role", "reader", "--id", "k_one")
	if out, errOut, code := cli(t, "", "list", "--keys", missing); code != 0 || !strings.Contains(out, "k_one") {
		t.Errorf("list after new: exit %d, %q %q", code, out, errOut)
	}
}

// TestCLIKeyFromAnEndlessStdin: check and hash read one line of stdin, and
// a line longer than any key (stdin from /dev/zero) ends them with an
// error, having read no more than a few KiB.
func TestCLIKeyFromAnEndlessStdin(t *testing.T) {
	for _, sub := range []string{"check", "hash"} {
		zero, err := os.Open("/dev/zero")
		if err != nil {
			t.Skip("no /dev/zero")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, gatewaytest.CaddyBinary(t), "apikey", sub)
		cmd.Stdin = zero
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		timedOut := ctx.Err() != nil
		zero.Close()
		cancel()
		if timedOut {
			t.Fatalf("%s < /dev/zero did not end within a minute", sub)
		}
		if err == nil || out.String() != "" || !strings.Contains(errOut.String(), "longer than 4096 bytes") {
			t.Errorf("%s < /dev/zero: %v, stdout %q, stderr %q", sub, err, out.String(), errOut.String())
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 1<<20 { // KiB: 1 GiB (a -race build starts at about 350 MiB)
			t.Errorf("%s < /dev/zero held %d MiB", sub, ru.Maxrss>>10)
		}
	}
}
