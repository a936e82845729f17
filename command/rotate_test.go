package command_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestCLIRotateRefusesARevokedKey: a new secret for a revoked key would be
// refused everywhere; rotate says so and prints no key, and the file keeps
// the record as it was.
func TestCLIRotateRefusesARevokedKey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_gone")
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", keyFile, "--id", "k_gone"); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	before, _ := os.ReadFile(keyFile)
	out, errOut, code := gatewaytest.CLI(t, "", "rotate", "--keys", keyFile, "--id", "k_gone")
	if code != 1 || out != "" || !strings.Contains(errOut, "is revoked") {
		t.Fatalf("rotate of a revoked key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(before, after) {
		t.Fatal("rotate of a revoked key changed the key file")
	}
}
