package apikey

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestLeakReportCaddyfile: the directive's options become the module's
// JSON; a block without a store or a way to check reports, or with an
// unknown option, is refused naming its line; options wrong only at
// provision (a bad action, an http URL off loopback, an empty hmac) fail
// the load naming the option.
func TestLeakReportCaddyfile(t *testing.T) {
	cfg, err := gatewaytest.Adapt(`http://127.0.0.1:1 {
	apikey_leak_report {
		keys file /tmp/k.json
		public_keys /etc/caddy/github-keys.json
		public_keys_url https://api.github.com/meta/public_keys/secret_scanning 30m
		hmac {env.SCANNER}
		action pause
		action dev notify
		rate 10/m
		audit_log /tmp/audit.log
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	raw := findHandler(t, cfg, "apikey_leak_report")
	var got LeakReport
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.PublicKeys != "/etc/caddy/github-keys.json" || got.PublicKeysURL == "" ||
		time.Duration(got.PublicKeysRefresh) != 30*time.Minute ||
		got.HMAC != "{env.SCANNER}" || got.Action != "pause" || got.ActionByType["dev"] != "notify" || got.Rate != "10/m" || got.AuditLog != "/tmp/audit.log" {
		t.Errorf("adapted to %+v", got)
	}

	for _, c := range []struct{ block, want string }{
		{"public_keys /k.json", "keys is required"},
		{"keys file /tmp/k.json", "public_keys <file>, public_keys_url <url> or hmac <secret>"},
		{"keys http http://127.0.0.1:1\n hmac s", "cannot be changed"},
		{"keys file /tmp/k.json\n hmac s\n action staging revoke", "dev or prod"},
		{"keys file /tmp/k.json\n hmac s\n action revoke\n action notify", "more than once"},
		{"keys file /tmp/k.json\n hmac s\n colour blue", `unrecognized apikey_leak_report subdirective "colour"`},
	} {
		_, err := gatewaytest.Adapt(fmt.Sprintf("http://127.0.0.1:1 {\n apikey_leak_report {\n %s\n }\n}\n", c.block))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: got %v, want an error naming the line and saying %q", c.block, err, c.want)
		}
	}

	keys := filepath.Join(t.TempDir(), "keys.json")
	os.WriteFile(keys, []byte(`{"keys": []}`), 0o600)
	for _, c := range []struct{ block, want string }{
		{"hmac s\n action shred", "action"},
		{"hmac s\n action prod shred", "action_by_type"},
		{"public_keys_url http://example.com/keys", "https"},
		{"hmac {env.APIKEY_TEST_UNSET_SECRET}", "hmac"},
		{"public_keys /nonexistent/keys.json", "public_keys"},
		{"hmac s\n rate often", "rate"},
	} {
		err := gatewaytest.Load(fmt.Sprintf("{\n admin off\n}\nhttp://127.0.0.1:%d {\n apikey_leak_report {\n keys file %s\n %s\n }\n}\n", gatewaytest.Port(t), keys, c.block))
		gatewaytest.Stop()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error naming %s", c.block, err, c.want)
		}
	}
}

// findHandler returns the JSON of the first handler named name in an
// adapted config, however deep in subroutes.
func findHandler(t *testing.T, cfg []byte, name string) []byte {
	t.Helper()
	var walk func(v any) map[string]any
	walk = func(v any) map[string]any {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == name {
				return v
			}
			for _, x := range v {
				if m := walk(x); m != nil {
					return m
				}
			}
		case []any:
			for _, x := range v {
				if m := walk(x); m != nil {
					return m
				}
			}
		}
		return nil
	}
	var doc any
	json.Unmarshal(cfg, &doc)
	m := walk(doc)
	if m == nil {
		t.Fatalf("no %s handler in the adapted config", name)
	}
	raw, _ := json.Marshal(m)
	return raw
}
