package apikey

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// opsGateway is a running Caddy with its admin endpoint, two routes on one
// key file, an audit log, and usage and counters in their own files.
type opsGateway struct {
	base, admin                      string
	keyFile, auditLog, usage, config string
	keys                             map[string]gatewaytest.Key
}

func opsSite(port, adminPort int, keyFile, auditLog, usageFile, counters, extra string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	persist_config off
}
http://127.0.0.1:%[1]d {
	handle_path /ollama/* {
		apikey {
			keys file %[3]s
			service ollama
			audit_log %[4]s
			usage_file %[5]s
			failed_auth_limit off
			metrics per_key
			counters memory {
				file %[6]s
			}
			%[7]s
		}
		respond "ok"
	}
	handle_path /n8n/* {
		apikey {
			keys file %[3]s
			service n8n
			audit_log %[4]s
			usage_file %[5]s
			failed_auth_limit off
			counters memory {
				file %[6]s
			}
		}
		respond "ok"
	}
}`, port, adminPort, keyFile, auditLog, usageFile, counters, extra)
}

func startOpsGateway(t *testing.T) *opsGateway {
	t.Helper()
	dir := t.TempDir()
	now := time.Now().UTC()
	g := &opsGateway{keyFile: filepath.Join(dir, "keys.json"), auditLog: filepath.Join(dir, "audit.log"),
		usage: filepath.Join(dir, "usage.json"), keys: map[string]gatewaytest.Key{}}
	add := func(name string, typ keystore.Type, rec keystore.Record) {
		g.keys[name] = gatewaytest.NewKey(t, typ, rec)
	}
	add("reader", keystore.Dev, keystore.Record{ID: "k_ops_reader", Name: "Ops reader", Type: "dev", Role: "reader", Services: []string{"ollama"}, QuotaPerDay: int64p(100)})
	add("writer", keystore.Prod, keystore.Record{ID: "k_ops_writer", Type: "prod", Role: "writer", Services: []string{"*"}})
	add("revoked", keystore.Dev, keystore.Record{ID: "k_ops_revoked", Role: "reader", Revoked: true})
	add("expired", keystore.Dev, keystore.Record{ID: "k_ops_expired", Role: "reader", ExpiresAt: now.Add(-time.Hour).Format(time.RFC3339)})
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	add("rotated", keystore.Dev, keystore.Record{ID: "k_ops_rotated", Role: "reader", Services: []string{"*"},
		PreviousHashes: []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: now.Add(time.Hour).Format(time.RFC3339)}}})
	g.keys["old"] = old
	var records []keystore.Record
	for _, name := range []string{"reader", "writer", "revoked", "expired", "rotated"} {
		records = append(records, g.keys[name].Record)
	}
	writeKeyFileAtomic(t, g.keyFile, records...)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	g.config = opsSite(port, adminPort, g.keyFile, g.auditLog, g.usage, filepath.Join(dir, "counters.json"), "")
	gatewaytest.Start(t, g.config)
	return g
}

// TestAdminKeysAndUsage: GET /apikey/keys and /apikey/usage after traffic.
func TestAdminKeysAndUsage(t *testing.T) {
	g := startOpsGateway(t)
	r, w := g.keys["reader"], g.keys["writer"]
	for i := 0; i < 3; i++ {
		gatewaytest.Send(t, "GET", g.base+"/ollama/api/tags", r.Bearer()...)
	}
	gatewaytest.Send(t, "POST", g.base+"/ollama/api/chat", r.Bearer()...) // 403: not counted
	gatewaytest.Send(t, "POST", g.base+"/n8n/api/v1/workflows/123", w.Bearer()...)
	gatewaytest.Send(t, "POST", g.base+"/n8n/api/v1/workflows/456", w.Bearer()...)
	gatewaytest.Send(t, "GET", g.base+"/ollama/users/42/orders", w.Bearer()...)

	code, body := gatewaytest.Admin(t, "GET", g.admin, "/apikey/keys")
	if code != 200 {
		t.Fatalf("GET /apikey/keys: %d %s", code, body)
	}
	for _, k := range g.keys {
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
		code, body := gatewaytest.Admin(t, "GET", g.admin, "/apikey/usage"+query)
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
		code, body := gatewaytest.Admin(t, "GET", g.admin, "/apikey/usage"+query)
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("usage%s: %d %s, want 400 naming %q", query, code, body, want)
		}
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.admin, "/apikey/keys"); code != 405 {
		t.Errorf("POST /apikey/keys: %d, want 405", code)
	}
	if code, _ := gatewaytest.Admin(t, "GET", g.admin, "/apikey/nothing"); code != 404 {
		t.Errorf("GET /apikey/nothing: %d, want 404", code)
	}
}

// TestAdminRevokeAndQuotaReset: the admin API revokes in the key file (the
// change applies at once and is audited) and resets a key's counters.
func TestAdminRevokeAndQuotaReset(t *testing.T) {
	g := startOpsGateway(t)
	r := g.keys["reader"]
	for i := 0; i < 5; i++ {
		gatewaytest.Send(t, "GET", g.base+"/ollama/x", r.Bearer()...)
	}
	if code, body := gatewaytest.Admin(t, "DELETE", g.admin, "/apikey/quota/k_ops_reader"); code != 200 {
		t.Fatalf("quota reset: %d %s", code, body)
	}
	if res := gatewaytest.Send(t, "GET", g.base+"/ollama/x", r.Bearer()...); res.Header.Get("X-RateLimit-Remaining") != "99" {
		t.Errorf("after the reset: remaining %q, want 99", res.Header.Get("X-RateLimit-Remaining"))
	}

	if code, body := gatewaytest.Admin(t, "POST", g.admin, "/apikey/keys/k_ops_reader/revoke"); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if res := gatewaytest.Send(t, "GET", g.base+"/ollama/x", r.Bearer()...); res.Status != 401 || res.Err.Code != "revoked_key" {
		t.Errorf("right after the revocation: %d %q", res.Status, res.Err.Code)
	}
	data, _ := os.ReadFile(g.keyFile)
	if !strings.Contains(string(data), `"id":"k_ops_reader"`) || !strings.Contains(string(data), `"revoked":true`) {
		t.Errorf("the key file does not hold the revocation:\n%s", data)
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.admin, "/apikey/keys/k_nobody/revoke"); code != 404 {
		t.Errorf("revoking an unknown id: %d, want 404", code)
	}
	if code, _ := gatewaytest.Admin(t, "DELETE", g.admin, "/apikey/quota/k_nobody"); code != 404 {
		t.Errorf("resetting an unknown id: %d, want 404", code)
	}
	// A key pasted where an id belongs is refused and never audited.
	for _, req := range [][2]string{
		{"DELETE", "/apikey/quota/" + r.Secret},
		{"POST", "/apikey/cache/purge?id=" + r.Secret},
		{"POST", "/apikey/keys/" + r.Secret + "/revoke"},
		{"GET", "/apikey/usage?key=" + r.Secret},
	} {
		if code, body := gatewaytest.Admin(t, req[0], g.admin, req[1]); code != 400 || strings.Contains(body, r.Secret) {
			t.Errorf("%s with a key: %d %s", req[0], code, body)
		}
	}
	if code, _ := gatewaytest.Admin(t, "GET", g.admin, "/apikey/keys/k_ops_writer/revoke"); code != 405 {
		t.Errorf("GET on revoke: %d, want 405", code)
	}

	gatewaytest.WaitForLog(t, g.auditLog, `"event":"key.revoked"`)
	// Refusals are written in the background: wait for them too.
	logs := gatewaytest.WaitForLog(t, g.auditLog, `"event":"request.denied"`)
	for _, want := range []string{`"actor":"admin_api"`, `"event":"quota.reset"`, `"event":"request.denied"`, `"decision":"revoked_key"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(logs, r.Secret) || strings.Contains(logs, strings.TrimPrefix(r.Record.Hash, "sha256:")[:16]) {
		t.Error("the audit log holds a key or its hash")
	}
	// The chain of a log written by Caddy checks out with the CLI.
	if out, errOut, code := cli(t, "", "audit", "verify", g.auditLog); code != 0 {
		t.Errorf("audit verify: %d %s %s", code, out, errOut)
	}
}

// TestAdminOnKeyService: revocation is 501 for a key service's keys, a
// purge makes the next request ask the service again, and the cache's
// results are counted.
func TestAdminOnKeyService(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_remote_admin", Role: "reader"})
	g := startRemoteGateway(t, "ttl 1h\n\t\t\tstale 2h", k.Record)
	_, before := gatewaytest.Admin(t, "GET", g.admin, "/metrics")
	hits0, _ := metricValue(t, before, "caddy_apikey_cache_requests_total", map[string]string{"result": "hit"})
	gatewaytest.Send(t, "GET", g.url, k.Bearer()...)
	gatewaytest.Send(t, "GET", g.url, k.Bearer()...)
	if n := g.svc.calls.Load(); n != 1 {
		t.Fatalf("%d calls before the purge", n)
	}
	if code, body := gatewaytest.Admin(t, "POST", g.admin, "/apikey/cache/purge?id=k_remote_admin"); code != 200 || !strings.Contains(body, `"caches": 1`) {
		t.Fatalf("purge one: %d %s", code, body)
	}
	gatewaytest.Send(t, "GET", g.url, k.Bearer()...)
	if n := g.svc.calls.Load(); n != 2 {
		t.Errorf("%d calls after purging the id, want 2", n)
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.admin, "/apikey/cache/purge"); code != 200 {
		t.Fatalf("purge all: %d", code)
	}
	gatewaytest.Send(t, "GET", g.url, k.Bearer()...)
	if n := g.svc.calls.Load(); n != 3 {
		t.Errorf("%d calls after purging everything, want 3", n)
	}
	if code, body := gatewaytest.Admin(t, "POST", g.admin, "/apikey/keys/k_remote_admin/revoke"); code != 501 || !strings.Contains(body, "read-only") {
		t.Errorf("revoking a key service's key: %d %s, want 501", code, body)
	}
	_, after := gatewaytest.Admin(t, "GET", g.admin, "/metrics")
	if hits, _ := metricValue(t, after, "caddy_apikey_cache_requests_total", map[string]string{"result": "hit"}); hits != hits0+1 {
		t.Errorf("cache hits %v, want %v", hits, hits0+1)
	}
	if misses, ok := metricValue(t, after, "caddy_apikey_cache_requests_total", map[string]string{"result": "miss"}); !ok || misses < 3 {
		t.Errorf("cache misses %v", misses)
	}
}

// metricValue reads one sample from a Prometheus text exposition.
func metricValue(t *testing.T, exposition, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		return v, err == nil
	}
	return 0, false
}

// TestMetricsSurviveReload scrapes /metrics after traffic and after a reload.
func TestMetricsSurviveReload(t *testing.T) {
	g := startOpsGateway(t)
	scrape := func() string {
		code, body := gatewaytest.Admin(t, "GET", g.admin, "/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		return body
	}
	before := scrape()
	allowed := map[string]string{"service": "ollama", "decision": "allowed", "key_type": "dev"}
	base, _ := metricValue(t, before, "caddy_apikey_requests_total", allowed)
	for i := 0; i < 4; i++ {
		gatewaytest.Send(t, "GET", g.base+"/ollama/x", g.keys["reader"].Bearer()...)
	}
	gatewaytest.Send(t, "GET", g.base+"/ollama/x", g.keys["revoked"].Bearer()...)
	gatewaytest.Send(t, "GET", g.base+"/n8n/x")

	after := scrape()
	if v, _ := metricValue(t, after, "caddy_apikey_requests_total", allowed); v != base+4 {
		t.Errorf("allowed on ollama: %v, want %v", v, base+4)
	}
	if v, ok := metricValue(t, after, "caddy_apikey_requests_total", map[string]string{"service": "ollama", "decision": "revoked_key", "key_type": "dev"}); !ok || v < 1 {
		t.Errorf("revoked_key on ollama: %v %v", v, ok)
	}
	if v, ok := metricValue(t, after, "caddy_apikey_requests_total", map[string]string{"service": "n8n", "decision": "missing_key", "key_type": "unknown"}); !ok || v < 1 {
		t.Errorf("missing_key on n8n: %v %v", v, ok)
	}
	if v, ok := metricValue(t, after, "caddy_apikey_requests_by_key_total", map[string]string{"key_id": "k_ops_reader", "decision": "allowed"}); !ok || v < 4 {
		t.Errorf("per-key metric: %v %v", v, ok)
	}
	if v, ok := metricValue(t, after, "caddy_apikey_check_duration_seconds_count", nil); !ok || v < 6 {
		t.Errorf("check duration count: %v %v", v, ok)
	}
	if strings.Contains(after, g.keys["reader"].Secret) {
		t.Fatal("a key in the metrics")
	}

	// Reload a changed config through the admin API: counts go on.
	changed := strings.Replace(g.config, `respond "ok"`, `respond "ok, reloaded"`, 1)
	cfg, err := gatewaytest.Config(changed)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", g.admin+"/load", bytes.NewReader(cfg))
	req.Header.Set("Content-Type", "application/json")
	resp, err := gatewaytest.Client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reload: %v %v", err, resp)
	}
	resp.Body.Close()
	// The old server closed its idle connections when it stopped; a kept-alive
	// connection may still look open to this client for a moment, and a
	// request sent on it meets EOF. Real clients retry that; the test starts
	// on a fresh connection instead.
	gatewaytest.Client.CloseIdleConnections()
	if r := gatewaytest.Send(t, "GET", g.base+"/ollama/x", g.keys["reader"].Bearer()...); r.Body != "ok, reloaded" {
		t.Fatalf("the new config is not in force: %q", r.Body)
	}
	if v, _ := metricValue(t, scrape(), "caddy_apikey_requests_total", allowed); v != base+5 {
		t.Errorf("after the reload: %v, want %v", v, base+5)
	}

	// A rejected key file version counts as a source error.
	errBefore, _ := metricValue(t, scrape(), "caddy_apikey_source_errors_total", map[string]string{"source": "file"})
	os.WriteFile(g.keyFile, []byte(`{"keys": [`), 0o600)
	eventually(t, "source error counted", func() bool {
		v, _ := metricValue(t, scrape(), "caddy_apikey_source_errors_total", map[string]string{"source": "file"})
		return v == errBefore+1
	})
}

// eventRecorder is an events handler that keeps what it is sent, so tests
// can see Caddy's events as a subscriber does.
type eventRecorder struct{}

var recorded = struct {
	mu     sync.Mutex
	events []caddy.Event
}{}

func init() { caddy.RegisterModule(eventRecorder{}) }

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.apikey_test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recorded.mu.Lock()
	recorded.events = append(recorded.events, e)
	recorded.mu.Unlock()
	return nil
}

func takeEvents() []caddy.Event {
	recorded.mu.Lock()
	defer recorded.mu.Unlock()
	out := recorded.events
	recorded.events = nil
	return out
}

// TestEvents subscribes to the handler's events through Caddy's events app.
func TestEvents(t *testing.T) {
	// Ids of their own on every run: warnings are once per key per window,
	// for the whole process.
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_events_" + suffix, Role: "reader", QuotaPerDay: int64p(10)})
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	rotated := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_events_rotated_" + suffix, Role: "reader",
		PreviousHashes: []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}})
	port := gatewaytest.Port(t)
	cfg, err := gatewaytest.Adapt(fmt.Sprintf(`{
	admin off
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
	respond "ok"
}`, port, gatewaytest.WriteKeyFile(t, key.Record, rotated.Record), filepath.Join(t.TempDir(), "c.json")))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal(cfg, &doc)
	doc["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{eventDenied, eventQuotaExceeded, eventQuotaWarning, eventDeprecatedKey},
		"handlers": []any{map[string]any{"handler": "apikey_test_recorder"}},
	}}}
	cfg, _ = json.Marshal(doc)
	takeEvents()
	if err := gatewaytest.LoadJSON(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gatewaytest.Stop() })
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	for i := 0; i < 12; i++ {
		gatewaytest.Send(t, "GET", url, key.Bearer()...)
	}
	gatewaytest.Send(t, "GET", url, "X-API-Key", "DEV_API_nope")
	gatewaytest.Send(t, "GET", url, old.Bearer()...)
	gatewaytest.Send(t, "GET", url, old.Bearer()...)

	var warnings []any
	counts := map[string]int{}
	for _, e := range takeEvents() {
		counts[e.Name()]++
		switch e.Name() {
		case eventQuotaWarning:
			warnings = append(warnings, e.Data["percent"])
			if e.Data["key_id"] != key.Record.ID || e.Data["limit"] != int64(10) {
				t.Errorf("warning data %v", e.Data)
			}
		case eventQuotaExceeded:
			if e.Data["key_id"] != key.Record.ID {
				t.Errorf("quota exceeded data %v", e.Data)
			}
		case eventDeprecatedKey:
			if e.Data["key_id"] != rotated.Record.ID || e.Data["valid_until"] == "" {
				t.Errorf("deprecated data %v", e.Data)
			}
		}
		for _, v := range e.Data {
			if s, ok := v.(string); ok && (strings.Contains(s, key.Secret) || strings.Contains(s, old.Secret) || strings.Contains(s, "sha256:")) {
				t.Errorf("event %s carries a key or hash", e.Name())
			}
		}
	}
	if fmt.Sprint(warnings) != "[80 90]" {
		t.Errorf("quota warnings %v, want [80 90] once each", warnings)
	}
	if counts[eventQuotaExceeded] != 1 || counts[eventDenied] != 3 || counts[eventDeprecatedKey] != 1 {
		t.Errorf("event counts %v, want 1 quota exceeded (once per window), 3 denied (2 quota + 1 invalid), 1 deprecated", counts)
	}
}

// TestUsageSurvivesRestart: usage counts are saved at shutdown and loaded.
func TestUsageSurvivesRestart(t *testing.T) {
	g := startOpsGateway(t)
	gatewaytest.Send(t, "GET", g.base+"/ollama/api/tags", g.keys["reader"].Bearer()...)
	gatewaytest.Send(t, "GET", g.base+"/ollama/api/tags", g.keys["reader"].Bearer()...)
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(g.usage)
	if err != nil || !bytes.Contains(data, []byte(`"k_ops_reader"`)) {
		t.Fatalf("usage not saved at shutdown: %v", err)
	}
	gatewaytest.Start(t, g.config)
	gatewaytest.Send(t, "GET", g.base+"/ollama/api/tags", g.keys["reader"].Bearer()...)
	_, body := gatewaytest.Admin(t, "GET", g.admin, "/apikey/usage?key=k_ops_reader")
	if !regexp.MustCompile(`"requests":\s*3`).MatchString(body) {
		t.Errorf("usage after a restart: %s", body)
	}
}

// TestKeyFileChangesAreAudited: a change made to the key file by any means
// (here the CLI, without --audit-log) is recorded by the running Caddy.
func TestKeyFileChangesAreAudited(t *testing.T) {
	g := startOpsGateway(t)
	newKeyByCLI(t, "--keys", g.keyFile, "--type", "dev", "--role", "reader", "--id", "k_made_outside")
	logs := gatewaytest.WaitForLog(t, g.auditLog, `"key_id":"k_made_outside"`)
	if !strings.Contains(logs, `"actor":"key_file","event":"key.created"`) {
		t.Errorf("the new key is not audited as created through the key file:\n%s", logs)
	}
	if _, errOut, code := cli(t, "", "revoke", "--keys", g.keyFile, "--id", "k_ops_writer"); code != 0 {
		t.Fatal(errOut)
	}
	logs = gatewaytest.WaitForLog(t, g.auditLog, `"event":"key.revoked","file"`)
	if strings.Count(logs, `"event":"key.created"`) != 1 {
		t.Errorf("the creation was audited more than once (two routes share the file and the log):\n%s", logs)
	}
	if out, _, code := cli(t, "", "audit", "verify", g.auditLog); code != 0 {
		t.Errorf("audit verify: %s", out)
	}
}
