package admin_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestKeysAndUsage: GET /apikey/keys and /apikey/usage after traffic.
func TestKeysAndUsage(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{})
	r, w := g.Keys["reader"], g.Keys["writer"]
	for i := 0; i < 3; i++ {
		gatewaytest.Send(t, "GET", g.Base+"/ollama/api/tags", r.Bearer()...)
	}
	gatewaytest.Send(t, "POST", g.Base+"/ollama/api/chat", r.Bearer()...) // 403: not counted
	gatewaytest.Send(t, "POST", g.Base+"/n8n/api/v1/workflows/123", w.Bearer()...)
	gatewaytest.Send(t, "POST", g.Base+"/n8n/api/v1/workflows/456", w.Bearer()...)
	gatewaytest.Send(t, "GET", g.Base+"/ollama/users/42/orders", w.Bearer()...)

	code, body := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/keys")
	if code != 200 {
		t.Fatalf("GET /apikey/keys: %d %s", code, body)
	}
	for _, k := range g.Keys {
		if h := strings.TrimPrefix(k.Record.Hash, "sha256:"); h != "" && strings.Contains(body, h[:16]) {
			t.Fatalf("/apikey/keys shows the hash of %s", k.Record.ID)
		}
	}
	var keys struct {
		Keys []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Quota  *struct {
				Limit, Used, Remaining int64
			} `json:"quota"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &keys); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range keys.Keys {
		got[k.ID] = k.Status
		if k.ID == "k_ops_reader" && (k.Quota == nil || k.Quota.Used != 3 || k.Quota.Limit != 100 || k.Quota.Remaining != 97) {
			t.Errorf("reader's quota: %+v", k.Quota)
		}
	}
	for id, want := range map[string]string{"k_ops_reader": "active", "k_ops_revoked": "revoked", "k_ops_expired": "expired", "k_ops_rotated": "rotation_grace"} {
		if got[id] != want {
			t.Errorf("%s: status %q, want %q", id, got[id], want)
		}
	}

	type row struct {
		KeyID    string    `json:"key_id"`
		Service  string    `json:"service"`
		Method   string    `json:"method"`
		Endpoint string    `json:"endpoint"`
		Requests int64     `json:"requests"`
		Time     time.Time `json:"time"`
	}
	usage := func(query string) []row {
		code, body := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/usage"+query)
		if code != 200 {
			t.Fatalf("usage%s: %d %s", query, code, body)
		}
		var out struct{ Rows []row }
		json.Unmarshal([]byte(body), &out)
		return out.Rows
	}
	find := func(rows []row, key, method, endpoint string) int64 {
		for _, r := range rows {
			if r.KeyID == key && r.Method == method && r.Endpoint == endpoint {
				return r.Requests
			}
		}
		return 0
	}
	rows := usage("")
	if find(rows, "k_ops_reader", "GET", "/api/tags") != 3 || find(rows, "k_ops_writer", "POST", "/api/v1") != 2 ||
		find(rows, "k_ops_writer", "GET", "/users/:id") != 1 || find(rows, "k_ops_reader", "POST", "/api/chat") != 0 {
		t.Errorf("hourly usage: %+v", rows)
	}
	if rows := usage("?key=k_ops_writer&service=n8n&by=day"); len(rows) != 1 || rows[0].Requests != 2 || rows[0].Time.Hour() != 0 {
		t.Errorf("daily usage of the writer on n8n: %+v", rows)
	}
	today := time.Now().UTC().Format("2006-01-02")
	if rows := usage("?from=" + today + "&to=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(rows) != 3 {
		t.Errorf("usage from today: %+v", rows)
	}
	// A date as "to" takes in that day.
	if rows := usage("?from=" + today + "&to=" + today); len(rows) != 3 {
		t.Errorf("usage of today, from and to as dates: %+v", rows)
	}

	for query, want := range map[string]string{
		"?by=week":                       "by",
		"?from=yesterday":                "from",
		"?to=2026-13-01":                 "to",
		"?from=2026-11-27&to=2026-11-26": "from must be before to",
		"?keys=k_x":                      "unknown parameter",
	} {
		code, body := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/usage"+query)
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("usage%s: %d %s, want 400 naming %q", query, code, body, want)
		}
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/keys"); code != 405 {
		t.Errorf("POST /apikey/keys: %d, want 405", code)
	}
	if code, _ := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/nothing"); code != 404 {
		t.Errorf("GET /apikey/nothing: %d, want 404", code)
	}
}

// TestKeysUntypedRecord: a record without "type" is listed with its
// quota under each type's limit, since the prefix of the key presented
// decides which the gateway enforces; a typed record keeps one quota.
func TestKeysUntypedRecord(t *testing.T) {
	untyped := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_untyped", Role: "reader"})
	typed := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_typed", Type: "dev", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, untyped.Record, typed.Record)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.Start(t, gatewaytest.Site{Port: port, AdminPort: adminPort, KeyFile: keyFile, Apikey: "quota dev 5/day\nquota prod 50/day\nfailed_auth_limit off",
		CountersFile: filepath.Join(t.TempDir(), "counters.json"), Handler: `respond "ok"`}.Caddyfile())
	base := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	var enforced string
	for range 2 {
		r := gatewaytest.Send(t, "GET", base, untyped.Bearer()...)
		if r.Status != 200 {
			t.Fatalf("untyped prod key: %d %s", r.Status, r.Body)
		}
		enforced = r.Header.Get("X-RateLimit-Limit")
	}
	gatewaytest.Send(t, "GET", base, typed.Bearer()...)

	code, body := gatewaytest.Admin(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", adminPort), "/apikey/keys")
	if code != 200 {
		t.Fatalf("GET /apikey/keys: %d %s", code, body)
	}
	type use struct{ Limit, Used, Remaining int64 }
	var got struct {
		Keys []struct {
			ID          string          `json:"id"`
			Quota       *use            `json:"quota"`
			QuotaByType map[string]*use `json:"quota_by_type"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range got.Keys {
		switch k.ID {
		case "k_untyped":
			if k.Quota != nil {
				t.Errorf("k_untyped shows one quota, limit %d, while the gateway enforces %s for the key presented", k.Quota.Limit, enforced)
			}
			prod, dev := k.QuotaByType["prod"], k.QuotaByType["dev"]
			if prod == nil || dev == nil || fmt.Sprint(prod.Limit) != enforced || *prod != (use{50, 2, 48}) || *dev != (use{5, 2, 3}) {
				t.Errorf("k_untyped quota by type: prod %+v, dev %+v; the gateway enforces %s", prod, dev, enforced)
			}
		case "k_typed":
			if k.Quota == nil || *k.Quota != (use{5, 1, 4}) || k.QuotaByType != nil {
				t.Errorf("k_typed: quota %+v, by type %v", k.Quota, k.QuotaByType)
			}
		}
	}
}

// TestRedisClusterDescribedByItsAddresses: a key source on a three-node
// Redis Cluster names its nodes separated by commas wherever it describes
// itself: the CLI's message after making a key, and each key's "source" in
// the admin API's listing.
func TestRedisClusterDescribedByItsAddresses(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	adminPort := gatewaytest.Port(t)
	gatewaytest.Start(t, gatewaytest.Site{Port: gatewaytest.Port(t), AdminPort: adminPort, KeysRedis: strings.Join(cluster.Addrs(), " ")}.Caddyfile())
	want := "redis " + strings.Join(cluster.Addrs(), ",") + " apikey:"
	_, errOut, code := gatewaytest.CLI(t, "", "new", "--redis", strings.Join(cluster.Addrs(), ","), "--type", "dev", "--role", "reader", "--id", "k_described")
	if code != 0 {
		t.Fatalf("new on a cluster: exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "to "+want+".") {
		t.Errorf("the CLI describes the cluster as %q, want %q", errOut, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := gatewaytest.Admin(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", adminPort), "/apikey/keys")
		var listing struct {
			Keys []struct {
				ID     string `json:"id"`
				Source string `json:"source"`
			} `json:"keys"`
		}
		json.Unmarshal([]byte(body), &listing)
		if code == 200 && len(listing.Keys) == 1 {
			if got := listing.Keys[0].Source; got != want {
				t.Errorf("the admin listing's source is %q, want %q", got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin listing never showed the key: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
