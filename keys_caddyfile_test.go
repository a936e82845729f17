package apikey

import (
	"fmt"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestEditableKeysAtLoad: the portal and the leak report endpoint change
// keys, so a JSON config (which the Caddyfile's checks do not see) that
// gives them no keys, or keys that cannot be changed, fails the load with an
// error naming the handler and the fix.
func TestEditableKeysAtLoad(t *testing.T) {
	for name, c := range map[string]struct{ handler, want string }{
		"portal, no keys":        {`"handler": "apikey_portal"`, "keys: the portal needs the key store, e.g. keys file"},
		"portal, http keys":      {`"handler": "apikey_portal", "keys": {"source": "http", "url": "http://127.0.0.1:1/keys"}`, "keys: the portal changes keys, and keys http cannot be changed; use keys file or keys redis"},
		"leak report, no keys":   {`"handler": "apikey_leak_report", "hmac": "s"`, "keys: the leak report endpoint needs the key store, e.g. keys file"},
		"leak report, http keys": {`"handler": "apikey_leak_report", "hmac": "s", "keys": {"source": "http", "url": "http://127.0.0.1:1/keys"}`, "keys: the leak report endpoint changes keys, and keys http cannot be changed; use keys file or keys redis"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {
				"listen": ["127.0.0.1:%d"],
				"routes": [{"handle": [{%s}]}]}}}}}`, gatewaytest.Port(t), c.handler)
			err := gatewaytest.LoadJSON([]byte(cfg))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load: %v, want %q", err, c.want)
			}
		})
	}
}
