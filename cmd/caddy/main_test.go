package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

func run(t *testing.T, bin, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestBinaryHasPluginAndValidatesExample checks the built binary: the
// plugin's modules are in it, and it validates the example config (which
// loads examples/keys.json) from the repository root, as README.md says.
func TestBinaryHasPluginAndValidatesExample(t *testing.T) {
	bin := gatewaytest.CaddyBinary(t)
	root, _ := filepath.Abs("../..")

	out, err := run(t, bin, root, "list-modules")
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, mod := range []string{"http.handlers.apikey", "http.apikey.sources.file", "http.handlers.reverse_proxy"} {
		if !strings.Contains(out, mod+"\n") {
			t.Errorf("list-modules lacks %s", mod)
		}
	}

	out, err = run(t, bin, root, "validate", "--config", "examples/Caddyfile")
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("validate: %v\n%s", err, out)
	}

	// A key file with a bad record is refused with the file, record and field.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "keys.json"), []byte(`{"keys": [{"id": "k_a", "hash": "sha256:00", "role": "reader"}]}`), 0o600)
	os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("http://localhost:1 {\n\tapikey {\n\t\tkeys file keys.json\n\t}\n}\n"), 0o600)
	out, err = run(t, bin, dir, "validate", "--config", "Caddyfile")
	if err == nil {
		t.Fatal("validate accepted a bad key file")
	}
	if !strings.Contains(out, `key file keys.json: keys[0] (id \"k_a\"): hash: must be`) {
		t.Errorf("validate output does not name the file, record and field:\n%s", out)
	}
}
