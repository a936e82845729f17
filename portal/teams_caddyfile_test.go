package portal_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestPortalTeamsCaddyfile: groups, team_groups and team become the
// portal's JSON, which Caddy then loads (the JSON round trip).
func TestPortalTeamsCaddyfile(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("{\n admin off\n}\nhttp://127.0.0.1:%d {\n apikey_portal {\n keys file %s\n service echo /e\n"+
		" groups {http.request.header.X-Auth-Request-Groups}\n team_groups ml /eng/data\n team_groups org:sre\n"+
		" team ops bob carol\n team sre dave\n }\n}\n", gatewaytest.Port(t), keys)
	data, err := gatewaytest.Adapt(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var portal json.RawMessage
	for _, srv := range doc.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				if strings.Contains(string(h), `"handler":"apikey_portal"`) {
					portal = h
				}
			}
		}
	}
	for _, want := range []string{`"groups":"{http.request.header.X-Auth-Request-Groups}"`, `"team_groups":["ml","/eng/data","org:sre"]`,
		`"teams":[{"members":["bob","carol"],"name":"ops"},{"members":["dave"],"name":"sre"}]`} {
		if !strings.Contains(string(portal), want) {
			t.Errorf("the portal's JSON %s does not hold %s", portal, want)
		}
	}
	if err := gatewaytest.LoadJSON(data); err != nil {
		t.Errorf("the adapted JSON does not load: %v", err)
	}
	gatewaytest.Stop()
	// A team defined in JSON is checked as in the Caddyfile.
	bad := strings.Replace(string(data), `"name":"sre"`, `"name":"s r e"`, 1)
	if err := gatewaytest.LoadJSON([]byte(bad)); err == nil || !strings.Contains(err.Error(), `team "s r e"`) {
		t.Errorf("a team named with spaces in JSON: %v, want an error naming it", err)
	}
	gatewaytest.Stop()
}

// TestPortalTeamKeysCountForTheTeam: max_keys counts a team's working keys
// for the team, not for their maker: alice at her own limit still makes
// keys for her team ml, up to the team's limit, which bob (in ml) meets
// too; a revoked team key frees a place.
func TestPortalTeamKeysCountForTheTeam(t *testing.T) {
	base, _, _ := portalSite(t, "\t\t\tmax_keys 2\n\t\t\tteam ml alice bob")
	alice, bob := newVisitor(t, base, "alice"), newVisitor(t, base, "bob")
	for range 2 {
		alice.create(devForm())
	}
	if status, body := alice.post("/portal/keys", devForm()); status != 403 || !strings.Contains(body, "you already hold 2 working keys") {
		t.Fatalf("alice's third own key: %d %s, want 403 at her limit", status, errorText(body))
	}
	first, _ := alice.create(devForm("team", "ml"))
	bob.create(devForm("team", "ml"))
	for who, v := range map[string]*visitor{"alice": alice, "bob": bob} {
		if status, body := v.post("/portal/keys", devForm("team", "ml")); status != 403 || !strings.Contains(body, "team ml already holds 2 working keys") {
			t.Errorf("%s's third key for team ml: %d %s, want 403 at the team's limit", who, status, errorText(body))
		}
	}
	if status, _ := bob.post("/portal/keys/"+first+"/revoke", url.Values{}); status != 200 {
		t.Fatalf("bob revoking alice's team key %s: %d", first, status)
	}
	bob.create(devForm("team", "ml"))
}

// TestPortalKeyCreatedNamesItsTeam: the key.created line of a team's key
// names its team; a personal key's has no team field at all. Lines that
// older releases wrote with "team":"" for a personal key still verify, as
// the chain hashes each line as written.
func TestPortalKeyCreatedNamesItsTeam(t *testing.T) {
	base, _, auditLog := portalSite(t, "\t\t\tteam ml alice")
	old := audit.Entry{"event": "key.created", "key_id": "k_old", "actor": "portal:alice", "owner": "alice", "team": ""}
	if err := audit.Append(auditLog, old); err != nil {
		t.Fatal(err)
	}
	alice := newVisitor(t, base, "alice")
	own, _ := alice.create(devForm())
	team, _ := alice.create(devForm("team", "ml"))
	if err := gatewaytest.Stop(); err != nil { // every writer done: the log is whole
		t.Fatal(err)
	}

	created := map[string]map[string]any{}
	for _, line := range strings.Split(string(readFile(t, auditLog)), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["event"] == "key.created" && e["actor"] == "portal:alice" {
			created[fmt.Sprint(e["key_id"])] = e
		}
	}
	if e, ok := created[own]; !ok {
		t.Errorf("no key.created line for alice's own key %s", own)
	} else if v, has := e["team"]; has {
		t.Errorf("alice's own key %s: its key.created line has \"team\": %q, want no team field", own, v)
	}
	if e, ok := created[team]; !ok || e["team"] != "ml" {
		t.Errorf("team ml's key %s: its key.created line has \"team\": %q, want \"ml\"", team, e["team"])
	}
	if out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog); code != 0 || !strings.Contains(out, "chain intact") {
		t.Errorf("caddy apikey audit verify: exit %d, %s%s", code, out, errOut)
	}
}
