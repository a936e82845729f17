package admin_test

import (
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestOnKeyService: revocation is 501 for a key service's keys, a
// purge makes the next request ask the service again, and the cache's
// results are counted.
func TestOnKeyService(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_remote_admin", Role: "reader"})
	g := gatewaytest.StartRemote(t, "ttl 1h\n\t\t\tstale 2h", k.Record)
	_, before := gatewaytest.Admin(t, "GET", g.Admin, "/metrics")
	hits0, _ := gatewaytest.MetricValue(t, before, "caddy_apikey_cache_requests_total", map[string]string{"result": "hit"})
	gatewaytest.Send(t, "GET", g.URL, k.Bearer()...)
	gatewaytest.Send(t, "GET", g.URL, k.Bearer()...)
	if n := g.Svc.Calls.Load(); n != 1 {
		t.Fatalf("%d calls before the purge", n)
	}
	if code, body := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/cache/purge?id=k_remote_admin"); code != 200 || !strings.Contains(body, `"caches": 1`) {
		t.Fatalf("purge one: %d %s", code, body)
	}
	gatewaytest.Send(t, "GET", g.URL, k.Bearer()...)
	if n := g.Svc.Calls.Load(); n != 2 {
		t.Errorf("%d calls after purging the id, want 2", n)
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/cache/purge"); code != 200 {
		t.Fatalf("purge all: %d", code)
	}
	gatewaytest.Send(t, "GET", g.URL, k.Bearer()...)
	if n := g.Svc.Calls.Load(); n != 3 {
		t.Errorf("%d calls after purging everything, want 3", n)
	}
	if code, body := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/keys/k_remote_admin/revoke"); code != 501 || !strings.Contains(body, "read-only") {
		t.Errorf("revoking a key service's key: %d %s, want 501", code, body)
	}
	_, after := gatewaytest.Admin(t, "GET", g.Admin, "/metrics")
	if hits, _ := gatewaytest.MetricValue(t, after, "caddy_apikey_cache_requests_total", map[string]string{"result": "hit"}); hits != hits0+1 {
		t.Errorf("cache hits %v, want %v", hits, hits0+1)
	}
	if misses, ok := gatewaytest.MetricValue(t, after, "caddy_apikey_cache_requests_total", map[string]string{"result": "miss"}); !ok || misses < 3 {
		t.Errorf("cache misses %v", misses)
	}
}
