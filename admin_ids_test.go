package apikey

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestAdminResolvesTheExactID: the admin API acts on exactly the id it is
// given. An id that differs from a key's by an invisible character (a
// zero-width space, white space around it) is refused with 400, never read
// as that key's id: the key stays admitted and unrevoked.
func TestAdminResolvesTheExactID(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw", Type: "dev", Role: "reader", Services: []string{"*"}})
	keyFile := gatewaytest.WriteKeyFile(t, k.Record)
	adminPort, port := gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		failed_auth_limit off
		counters memory {
			file %s
		}
	}
	respond "admitted {http.apikey.id}"
}`, adminPort, port, keyFile, filepath.Join(t.TempDir(), "counters.json")))
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	for _, c := range []struct{ method, uri, names string }{
		{"POST", "/apikey/keys/k_zw%E2%80%8B/revoke", "U+200B"},
		{"POST", "/apikey/keys/%E2%80%8Bk_zw/revoke", "U+200B"},
		{"POST", "/apikey/keys/k_zw%E2%80%AE/revoke", "U+202E"},
		{"POST", "/apikey/keys/k_zw%C2%A0/revoke", "U+00A0"},
		{"POST", "/apikey/keys/%20k_zw/revoke", "white space"},
		{"POST", "/apikey/keys/k_zw%0A/revoke", "U+000A"},
		{"DELETE", "/apikey/quota/k_zw%E2%80%8B", "U+200B"},
		{"POST", "/apikey/cache/purge?id=k_zw%E2%80%8B", "U+200B"},
		{"GET", "/apikey/usage?key=k_zw%E2%80%8B", "U+200B"},
	} {
		code, body := gatewaytest.Admin(t, c.method, admin, c.uri)
		if code != 400 || !strings.Contains(body, c.names) {
			t.Errorf("%s %s: %d %s, want 400 naming %s", c.method, c.uri, code, body, c.names)
		}
	}
	if r := gatewaytest.Send(t, "GET", url, k.Bearer()...); r.Status != 200 {
		t.Fatalf("k_zw after revocations of other ids: %d, want still admitted", r.Status)
	}
	if data, _ := os.ReadFile(keyFile); strings.Contains(string(data), "revoked") {
		t.Fatal("a revocation of another id revoked k_zw in the key file")
	}

	// The exact id, escaped or not, is k_zw's.
	if code, body := gatewaytest.Admin(t, "POST", admin, "/apikey/keys/k%5Fzw/revoke"); code != 200 {
		t.Fatalf("revoking k_zw: %d %s", code, body)
	}
	eventually(t, "k_zw refused once revoked", func() bool { return gatewaytest.Send(t, "GET", url, k.Bearer()...).Status == 401 })
}

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
		_, errOut, code := cli(t, "", "new", "--keys", file, "--type", "dev", "--role", "reader", "--id", id)
		if code != 1 || !strings.Contains(errOut, "id:") || !(strings.Contains(errOut, "U+") || strings.Contains(errOut, "normal form C")) {
			t.Errorf("new --id %q: exit %d: %s", id, code, errOut)
		}
	}
	data, _ := os.ReadFile(file)
	var kf struct{ Keys []keystore.Record }
	if err := json.Unmarshal(data, &kf); err != nil || len(kf.Keys) != 1 {
		t.Fatalf("the key file changed: %d records, %v", len(kf.Keys), err)
	}
	_, errOut, code := cli(t, "", "import", bad, "--redis", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "keys[1]") || !strings.Contains(errOut, "U+200B") || !strings.Contains(errOut, "nothing was imported") {
		t.Errorf("import of a file with k_zw and a zero-width space: exit %d: %s", code, errOut)
	}
}
