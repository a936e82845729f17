package command_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	_ "github.com/moodmnky/caddy-apikey"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestMain keeps Caddy and the commands out of the real HOME; the
// commands are tested as users run them, from the built binary
// (gatewaytest.CaddyBinary: cmd/caddy, Caddy with the plugin).
func TestMain(m *testing.M) { gatewaytest.Main(m) }

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
