package apikey

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

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
