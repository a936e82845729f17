package apikey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestKeyFileOverTheCapFailsTheLoad: Caddy refuses a key file over the cap
// when the config loads, naming the file and the cap.
func TestKeyFileOverTheCapFailsTheLoad(t *testing.T) {
	big := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, capped.KeyFile+1); err != nil { // sparse: it takes no room on disk
		t.Fatal(err)
	}
	err := gatewaytest.Load(gatewaytest.Site{Port: gatewaytest.Port(t), KeyFile: big}.Caddyfile())
	if err == nil {
		gatewaytest.Stop()
		t.Fatal("a key file over the cap loaded")
	}
	if !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), capped.Size(capped.KeyFile)) {
		t.Errorf("the error does not name the file and the cap: %v", err)
	}
}
