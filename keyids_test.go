package apikey

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestIDsThatDoNotShowAreRefused: an id holding a character that does not
// show is refused wherever a key is made or loaded: by caddy apikey new,
// by an import, and by Caddy loading a key file (the error names the file,
// the record and the field).
func TestIDsThatDoNotShowAreRefused(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw", Type: "dev", Role: "reader", Services: []string{"*"}})
	twin := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw\u200b", Type: "dev", Role: "reader", Services: []string{"*"}})
	bad := gatewaytest.WriteKeyFile(t, k.Record, twin.Record)

	err := gatewaytest.Load(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		counters memory
	}
	respond "admitted"
}`, gatewaytest.Port(t), bad))
	if err == nil {
		_ = gatewaytest.Stop()
		t.Fatal("Caddy loaded a key file with the id k_zw and a zero-width space")
	}
	for _, want := range []string{bad, "keys[1]", "id:", "U+200B"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("load error does not name %q: %v", want, err)
		}
	}

	file := gatewaytest.WriteKeyFile(t, k.Record)
	for _, id := range []string{"k_zw\u200b", "k_\u202ezw", "k\u00a0zw", "k_zw\u2028", "k_cafe\u0301"} {
		_, errOut, code := gatewaytest.CLI(t, "", "new", "--keys", file, "--type", "dev", "--role", "reader", "--id", id)
		if code != 1 || !strings.Contains(errOut, "id:") || !(strings.Contains(errOut, "U+") || strings.Contains(errOut, "normal form C")) {
			t.Errorf("new --id %q: exit %d: %s", id, code, errOut)
		}
	}
	data, _ := os.ReadFile(file)
	var kf struct{ Keys []keystore.Record }
	if err := json.Unmarshal(data, &kf); err != nil || len(kf.Keys) != 1 {
		t.Fatalf("the key file changed: %d records, %v", len(kf.Keys), err)
	}
	_, errOut, code := gatewaytest.CLI(t, "", "import", bad, "--redis", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "keys[1]") || !strings.Contains(errOut, "U+200B") || !strings.Contains(errOut, "nothing was imported") {
		t.Errorf("import of a file with k_zw and a zero-width space: exit %d: %s", code, errOut)
	}
}
