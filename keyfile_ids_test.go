package apikey

import (
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestKeyFileIDsThatDoNotShowAreRefused: Caddy refuses to load a key file
// with an id holding a character that does not show; the error names the
// file, the record and the field. (caddy apikey new and import refusing
// such ids is command/'s TestCLIRefusesIDsThatDoNotShow.)
func TestKeyFileIDsThatDoNotShowAreRefused(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw", Type: "dev", Role: "reader", Services: []string{"*"}})
	twin := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw\u200b", Type: "dev", Role: "reader", Services: []string{"*"}})
	bad := gatewaytest.WriteKeyFile(t, k.Record, twin.Record)

	err := gatewaytest.Load(gatewaytest.Site{Port: gatewaytest.Port(t), KeyFile: bad, Apikey: "counters memory", Handler: `respond "admitted"`}.Caddyfile())
	if err == nil {
		_ = gatewaytest.Stop()
		t.Fatal("Caddy loaded a key file with the id k_zw and a zero-width space")
	}
	for _, want := range []string{bad, "keys[1]", "id:", "U+200B"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("load error does not name %q: %v", want, err)
		}
	}
}
