package apikey

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestAdminRoutes: the admin API's answers to a method or a path it does
// not serve are its own JSON errors, naming the method a path takes (HEAD
// is not GET here); one slash at the end of a path is no step of it; an id
// is a path segment as sent, "%2F" included.
func TestAdminRoutes(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_route", Type: "dev", Role: "reader", Services: []string{"*"}})
	adminPort := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		counters memory {
			file %s
		}
	}
	respond "admitted"
}`, adminPort, gatewaytest.Port(t), gatewaytest.WriteKeyFile(t, k.Record), filepath.Join(t.TempDir(), "counters.json")))
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	for _, c := range []struct {
		method, uri string
		code        int
		says        string
	}{
		{"POST", "/apikey/keys", 405, `"error":"/apikey/keys needs GET, not POST"`},
		{"HEAD", "/apikey/keys", 405, ""},
		{"DELETE", "/apikey/keys/k_route/revoke", 405, `needs POST, not DELETE`},
		{"GET", "/apikey/quota/k_route", 405, `needs DELETE, not GET`},
		{"GET", "/apikey/cache/purge", 405, `needs POST, not GET`},
		{"PUT", "/apikey/audit/head", 405, `needs GET, not PUT`},
		{"GET", "/apikey/nothing", 404, `"error":"no apikey admin endpoint /apikey/nothing"`},
		{"GET", "/apikey/keys/k_route", 404, `no apikey admin endpoint`},
		{"POST", "/apikey/keys/k_route/revoke/more", 404, `no apikey admin endpoint`},
		{"GET", "/apikey/", 404, `no apikey admin endpoint`},
		{"GET", "/apikey/keys/", 200, `"id": "k_route"`},
		{"GET", "/apikey/audit/head/", 200, `"logs": []`},
		{"POST", "/apikey/keys/k%2Froute/revoke", 404, `no key has id \"k/route\"`},
		{"DELETE", "/apikey/quota/k%2Froute", 404, `no key has id \"k/route\"`},
	} {
		code, body := gatewaytest.Admin(t, c.method, admin, c.uri)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s %s: %d %s, want %d saying %s", c.method, c.uri, code, body, c.code, c.says)
		}
	}
}
