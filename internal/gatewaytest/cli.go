package gatewaytest

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// CLI runs `caddy apikey <args>` from the built binary (CaddyBinary), with
// stdin, and returns what it printed and its exit status.
func CLI(t testing.TB, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(CaddyBinary(t), append([]string{"apikey"}, args...)...)
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

// NewKeyByCLI runs `caddy apikey new <args>` and returns the key it
// printed, checking that it printed the key alone on stdout and said on
// stderr that it is shown once.
func NewKeyByCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := CLI(t, "", append([]string{"new"}, args...)...)
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
