package apikey

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestMissingKeyFileError: a first start whose key file is not there yet
// fails the load with one line that names the file and the command that
// creates it, not a chain ending in "open …: no such file or directory".
func TestMissingKeyFileError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "keys.json")
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(fmt.Sprintf(`{
	admin off
}
http://localhost:0 {
	apikey {
		keys file %s
	}
	respond ok
}
`, path)), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfg, true)
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("Caddy loaded a config whose key file does not exist")
	}
	msg := err.Error()
	// Caddy puts the module path in front ("loading http app module: …");
	// what the plugin says starts at "key file".
	_, ours, ok := strings.Cut(msg, "key file "+path)
	if !ok {
		t.Fatalf("the error does not name the key file: %s", msg)
	}
	for _, want := range []string{"does not exist", "caddy apikey new --keys " + path} {
		if !strings.Contains(ours, want) {
			t.Errorf("the error lacks %q: %s", want, msg)
		}
	}
	for _, bad := range []string{"no such file or directory", "open " + path} {
		if strings.Contains(msg, bad) {
			t.Errorf("the error still says %q: %s", bad, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("the error is more than one line: %q", msg)
	}
}
