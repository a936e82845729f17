package admin_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// twoStoresSite is one Caddy with a route on a key file and a route on
// Redis, its admin API on adminPort: a migration from one to the other.
func twoStoresSite(adminPort, filePort, redisPort int, keyFile, redisAddr, dir string) string {
	return fmt.Sprintf(`{
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
	respond "admitted {http.apikey.id} by file"
}
http://127.0.0.1:%d {
	apikey {
		keys redis {
			address %s
			timeout 2s
		}
		failed_auth_limit off
		counters memory {
			file %s
		}
	}
	respond "admitted {http.apikey.id} by redis"
}`, adminPort, filePort, keyFile, filepath.Join(dir, "c1.json"), redisPort, redisAddr, filepath.Join(dir, "c2.json"))
}

// TestRevokesInEveryStore: during a migration the same key is in the
// key file and in Redis, one Caddy reading both. A revocation through the
// admin API revokes it in both (and says so), so neither route admits it
// afterwards; revoking again names both stores again.
func TestRevokesInEveryStore(t *testing.T) {
	srv := redistest.Start(t)
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_moved", Type: "dev", Role: "reader", Services: []string{"*"}})
	keyFile := gatewaytest.WriteKeyFile(t, k.Record)
	if _, errOut, code := gatewaytest.CLI(t, "", "import", keyFile, "--redis", srv.Addr()); code != 0 {
		t.Fatalf("import into redis: exit %d: %s", code, errOut)
	}
	adminPort, filePort, redisPort := gatewaytest.Port(t), gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.Start(t, twoStoresSite(adminPort, filePort, redisPort, keyFile, srv.Addr(), t.TempDir()))
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	routes := map[string]string{
		"file":  fmt.Sprintf("http://127.0.0.1:%d/", filePort),
		"redis": fmt.Sprintf("http://127.0.0.1:%d/", redisPort),
	}
	for name, url := range routes {
		if r := gatewaytest.Send(t, "GET", url, k.Bearer()...); r.Status != 200 {
			t.Fatalf("%s route before the revocation: %d", name, r.Status)
		}
	}

	code, body := gatewaytest.Admin(t, "POST", admin, "/apikey/keys/k_moved/revoke")
	if code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	for name, url := range routes {
		gatewaytest.WaitUntil(t, "the "+name+" route refuses the revoked key", 2*time.Second, func() bool {
			return gatewaytest.Send(t, "GET", url, k.Bearer()...).Status == 401
		})
	}
	for range 2 {
		var answer struct {
			Revoked bool     `json:"revoked"`
			Stores  []string `json:"stores"`
		}
		if err := json.Unmarshal([]byte(body), &answer); err != nil || !answer.Revoked || len(answer.Stores) != 2 ||
			!strings.Contains(strings.Join(answer.Stores, " "), keyFile) || !strings.Contains(strings.Join(answer.Stores, " "), "redis") {
			t.Fatalf("the answer does not name both stores: %s", body)
		}
		if code, body = gatewaytest.Admin(t, "POST", admin, "/apikey/keys/k_moved/revoke"); code != 200 {
			t.Fatalf("revoking again: %d %s", code, body)
		}
	}
	if out, errOut, code := gatewaytest.CLI(t, "", "list", "--redis", srv.Addr(), "--json"); code != 0 || !strings.Contains(out, `"status": "revoked"`) {
		t.Fatalf("redis after the revocation: exit %d %s %s", code, out, errOut)
	}
	if data, _ := os.ReadFile(keyFile); !strings.Contains(string(data), `"revoked":true`) {
		t.Fatal("the key file does not hold the revocation")
	}
}
