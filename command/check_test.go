package command_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestCLICheckAndHash read the key from stdin.
func TestCLICheckAndHash(t *testing.T) {
	k, _ := keystore.Generate(keystore.Prod)
	if out, _, code := gatewaytest.CLI(t, k+"\n", "check"); code != 0 || !strings.Contains(out, "valid prod key") {
		t.Errorf("check: %d %q", code, out)
	}
	if out, _, code := gatewaytest.CLI(t, k+"\n", "hash"); code != 0 || strings.TrimSpace(out) != keystore.Sum(k).Encode() {
		t.Errorf("hash: %d %q", code, out)
	}
	bad := k[:len(k)-1] + "!"
	for _, cmd := range []string{"check", "hash"} {
		out, errOut, code := gatewaytest.CLI(t, bad+"\n", cmd)
		if code != 1 || out != "" || !strings.Contains(errOut, "invalid key") {
			t.Errorf("%s on a bad key: exit %d, out %q, err %q", cmd, code, out, errOut)
		}
		if strings.Contains(errOut, bad) {
			t.Errorf("%s repeats the key in its error", cmd)
		}
	}
	if _, errOut, code := gatewaytest.CLI(t, "DEV_API_short\n", "check"); code != 1 || !strings.Contains(errOut, "wrong length") {
		t.Errorf("check on a short key: %d %q", code, errOut)
	}
}

// TestCLINeverTakesAKeyFromArgv: check and hash refuse arguments, without
// repeating them.
func TestCLINeverTakesAKeyFromArgv(t *testing.T) {
	k, _ := keystore.Generate(keystore.Dev)
	for _, cmd := range []string{"check", "hash"} {
		out, errOut, code := gatewaytest.CLI(t, "", cmd, k)
		if code != 1 || strings.Contains(out+errOut, k) || !strings.Contains(errOut, "stdin") {
			t.Errorf("%s with the key as an argument: exit %d, output %q %q", cmd, code, out, errOut)
		}
	}
	// An id shaped like a key is refused too: ids are logged.
	if _, errOut, code := gatewaytest.CLI(t, "", "new", "--keys", filepath.Join(t.TempDir(), "k.json"), "--type", "dev", "--role", "reader", "--id", k); code != 1 || strings.Contains(errOut, k) {
		t.Errorf("a key as --id: exit %d, %q", code, errOut)
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
