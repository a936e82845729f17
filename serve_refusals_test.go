package apikey

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestKeyRefusalsWrittenBounded: a key refused again and again (a client
// retrying a 403) costs at most 10 log lines and audit entries a minute,
// and the metrics still count every refusal.
func TestKeyRefusalsWrittenBounded(t *testing.T) {
	reader := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_refused_often", Role: "reader"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	dir := t.TempDir()
	logPath, auditPath := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "audit.log")
	cfg := strings.Replace(guardedSite(port, logPath, gatewaytest.WriteKeyFile(t, reader.Record), up.Addr(), "audit_log "+auditPath, ""),
		"level DEBUG", "level INFO", 1)
	gatewaytest.Start(t, cfg)
	for range 300 {
		if r := gatewaytest.Send(t, "DELETE", fmt.Sprintf("http://127.0.0.1:%d/api/x", port), reader.Bearer()...); r.Status != 403 {
			t.Fatalf("DELETE by a reader: %d", r.Status)
		}
	}
	time.Sleep(300 * time.Millisecond) // the audit writer's batch
	log, _ := os.ReadFile(logPath)
	audit, _ := os.ReadFile(auditPath)
	if n := strings.Count(string(log), `"key_id":"k_refused_often"`); n != refusalBurst {
		t.Errorf("%d log lines for 300 refusals, want %d", n, refusalBurst)
	}
	if n := strings.Count(string(audit), `"key_id":"k_refused_often"`); n != refusalBurst {
		t.Errorf("%d audit entries for 300 refusals, want %d", n, refusalBurst)
	}
}

// TestThrottledFloodWritesOnce: 500 keyless requests with 20 KB paths from
// one address cost one log line, one audit entry and one event for the
// block, beside the refusals before it; paths are cut in what is written.
func TestThrottledFloodWritesOnce(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_flood", Role: "reader"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	dir := t.TempDir()
	logPath, auditPath := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "audit.log")
	// At INFO, as in production: at DEBUG, Caddy's own handle_path logs
	// every request whole.
	cfg := strings.Replace(guardedSite(port, logPath, gatewaytest.WriteKeyFile(t, key.Record), up.Addr(), "audit_log "+auditPath, ""),
		"level DEBUG", "level INFO", 1)
	doc := adaptJSON(t, cfg)
	doc["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events": []string{eventDenied}, "handlers": []any{map[string]any{"handler": "apikey_test_recorder"}},
	}}}
	gatewaytest.StartJSON(t, doc)
	takeEvents()

	long := "/api/" + strings.Repeat("x", 20<<10)
	const n, limit = 500, 20
	statuses := map[int]int{}
	for range n {
		statuses[gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, long)).Status]++
	}
	if statuses[401] != limit || statuses[429] != n-limit {
		t.Fatalf("statuses %v, want %d × 401 then 429", statuses, limit)
	}
	log := gatewaytest.WaitForLog(t, logPath, "client address throttled")
	if c := strings.Count(log, `"msg":"request denied"`); c != limit {
		t.Errorf("%d request denied lines, want %d (one per failure, none per throttled request)", c, limit)
	}
	if c := strings.Count(log, "client address throttled"); c != 1 {
		t.Errorf("%d throttle lines, want 1", c)
	}
	if info, err := os.Stat(logPath); err != nil || info.Size() > 64<<10 {
		t.Errorf("the log grew to %d bytes", info.Size())
	}
	audit := gatewaytest.WaitForLog(t, auditPath, "client.throttled")
	if c := strings.Count(audit, "\n"); c != limit+1 {
		t.Errorf("%d audit lines, want %d", c, limit+1)
	}
	if len(audit) > 32<<10 {
		t.Errorf("the audit log grew to %d bytes for %d lines: paths are not cut", len(audit), limit+1)
	}
	time.Sleep(200 * time.Millisecond)
	if events := takeEvents(); len(events) != limit+1 {
		t.Errorf("%d apikey_denied events, want %d", len(events), limit+1)
	}
}
