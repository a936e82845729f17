package apikey

import (
	"bytes"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestShardsSpread: requests allocated one after another land on every
// shard, about evenly.
func TestShardsSpread(t *testing.T) {
	counts := make([]int, metricShards)
	keep := make([]*http.Request, 0, 16000)
	for i := 0; i < 16000; i++ {
		r := &http.Request{}
		keep = append(keep, r)
		counts[shardOf(r)]++
	}
	for s, n := range counts {
		if n < 500 || n > 1500 {
			t.Errorf("shard %d got %d of 16000 requests: %v", s, n, counts)
			break
		}
	}
	runtime.KeepAlive(keep) // the requests' addresses stay distinct while counted
}

// TestMetricsSurviveReload scrapes /metrics after traffic and after a reload.
func TestMetricsSurviveReload(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{})
	scrape := func() string {
		code, body := gatewaytest.Admin(t, "GET", g.Admin, "/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		return body
	}
	before := scrape()
	allowed := map[string]string{"service": "ollama", "decision": "allowed", "key_type": "dev"}
	base, _ := gatewaytest.MetricValue(t, before, "caddy_apikey_requests_total", allowed)
	for i := 0; i < 4; i++ {
		gatewaytest.Send(t, "GET", g.Base+"/ollama/x", g.Keys["reader"].Bearer()...)
	}
	gatewaytest.Send(t, "GET", g.Base+"/ollama/x", g.Keys["revoked"].Bearer()...)
	gatewaytest.Send(t, "GET", g.Base+"/n8n/x")

	after := scrape()
	if v, _ := gatewaytest.MetricValue(t, after, "caddy_apikey_requests_total", allowed); v != base+4 {
		t.Errorf("allowed on ollama: %v, want %v", v, base+4)
	}
	if v, ok := gatewaytest.MetricValue(t, after, "caddy_apikey_requests_total", map[string]string{"service": "ollama", "decision": "revoked_key", "key_type": "dev"}); !ok || v < 1 {
		t.Errorf("revoked_key on ollama: %v %v", v, ok)
	}
	if v, ok := gatewaytest.MetricValue(t, after, "caddy_apikey_requests_total", map[string]string{"service": "n8n", "decision": "missing_key", "key_type": "unknown"}); !ok || v < 1 {
		t.Errorf("missing_key on n8n: %v %v", v, ok)
	}
	if v, ok := gatewaytest.MetricValue(t, after, "caddy_apikey_requests_by_key_total", map[string]string{"key_id": "k_ops_reader", "decision": "allowed"}); !ok || v < 4 {
		t.Errorf("per-key metric: %v %v", v, ok)
	}
	if v, ok := gatewaytest.MetricValue(t, after, "caddy_apikey_check_duration_seconds_count", nil); !ok || v < 6 {
		t.Errorf("check duration count: %v %v", v, ok)
	}
	if strings.Contains(after, g.Keys["reader"].Secret) {
		t.Fatal("a key in the metrics")
	}

	// Reload a changed config through the admin API: counts go on.
	changed := strings.Replace(g.Config, `respond "ok"`, `respond "ok, reloaded"`, 1)
	cfg, err := gatewaytest.Config(changed)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", g.Admin+"/load", bytes.NewReader(cfg))
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
	// Caddy stops the old config's servers after /load has answered: for a
	// moment one may still take a connection, and answer as before. Every
	// request is counted, whichever config answers it.
	sent := 0
	gatewaytest.WaitUntil(t, "the new config in force", 10*time.Second, func() bool {
		sent++
		r := gatewaytest.Send(t, "GET", g.Base+"/ollama/x", g.Keys["reader"].Bearer()...)
		if r.Body != "ok" && r.Body != "ok, reloaded" {
			t.Fatalf("after the reload: %d %q", r.Status, r.Body)
		}
		return r.Body == "ok, reloaded"
	})
	if v, _ := gatewaytest.MetricValue(t, scrape(), "caddy_apikey_requests_total", allowed); v != base+4+float64(sent) {
		t.Errorf("after the reload: %v, want %v", v, base+4+float64(sent))
	}

	// A rejected key file version counts as a source error.
	errBefore, _ := gatewaytest.MetricValue(t, scrape(), "caddy_apikey_source_errors_total", map[string]string{"source": "file"})
	os.WriteFile(g.KeyFile, []byte(`{"keys": [`), 0o600)
	eventually(t, "source error counted", func() bool {
		v, _ := gatewaytest.MetricValue(t, scrape(), "caddy_apikey_source_errors_total", map[string]string{"source": "file"})
		return v == errBefore+1
	})
}
