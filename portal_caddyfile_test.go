package apikey

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// portalBlock parses an apikey_portal block with the given body, which
// starts on line 2.
func portalBlock(body string) (*Portal, error) {
	p := new(Portal)
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apikey_portal {\n" + body + "\n}"))
	return p, err
}

// TestPortalCaddyfileErrorsExactly: each way an apikey_portal subdirective
// can be wrong, given twice or unknown gives its own message, word for word
// and naming its line (the docs and the troubleshooting page quote them).
func TestPortalCaddyfileErrorsExactly(t *testing.T) {
	const ok = "keys file /tmp/k.json\nservice echo /e\n" // lines 2 and 3: a case's own line is 4
	p := new(Portal)
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apikey_portal extra {\nkeys file /tmp/k.json\n}"))
	if want := "wrong argument count or unexpected line ending after 'extra', at Testfile:1"; err == nil || err.Error() != want {
		t.Errorf("apikey_portal with an argument: got %v, want %s", err, want)
	}
	for _, c := range []struct{ body, want string }{
		{"keys", "wrong argument count or unexpected line ending after 'keys', at Testfile:2"},
		{"keys http http://127.0.0.1:1", "apikey_portal: keys http cannot be changed; use keys file <path> or keys redis {…}, at Testfile:2"},
		{"keys file /tmp/k.json\nkeys file /tmp/j.json", "apikey_portal: keys given more than once, at Testfile:3"},
		{ok + "base_path", "wrong argument count or unexpected line ending after 'base_path', at Testfile:4"},
		{ok + "base_path /a /b", "wrong argument count or unexpected line ending after '/a', at Testfile:4"},
		{ok + "base_path portal", "base_path \"portal\" must start with /, at Testfile:4"},
		{ok + "base_path /a\nbase_path /b", "apikey_portal: base_path given more than once, at Testfile:5"},
		{"service", "want service <name> [<path> [<Header> [<scheme>]]], got 0 arguments, at Testfile:2"},
		{"service a /a H s extra", "want service <name> [<path> [<Header> [<scheme>]]], got 5 arguments, at Testfile:2"},
		{"service echo /e {\ndescription\n}", "service echo: want description \"<text>\" (quoted when it has spaces), at Testfile:3"},
		{"service echo /e {\ndescription one two\n}", "service echo: want description \"<text>\" (quoted when it has spaces), at Testfile:3"},
		{"service echo /e {\ndocs\n}", "wrong argument count or unexpected line ending after 'docs', at Testfile:3"},
		{"service echo /e {\ndocs /a /b\n}", "wrong argument count or unexpected line ending after '/a', at Testfile:3"},
		{"service echo /e {\ncolour blue\n}", "service echo: unrecognized option \"colour\" (want description or docs), at Testfile:3"},
		{ok + "types", "wrong argument count or unexpected line ending after 'types', at Testfile:4"},
		{ok + "types dev\ntypes prod", "apikey_portal: types given more than once, at Testfile:5"},
		{ok + "max_role", "wrong argument count or unexpected line ending after 'max_role', at Testfile:4"},
		{ok + "max_role reader writer", "wrong argument count or unexpected line ending after 'reader', at Testfile:4"},
		{ok + "custom_permissions yes", "wrong argument count or unexpected line ending after 'yes', at Testfile:4"},
		{ok + "custom_permissions\ncustom_permissions", "apikey_portal: custom_permissions given more than once, at Testfile:5"},
		{ok + "max_keys", "wrong argument count or unexpected line ending after 'max_keys', at Testfile:4"},
		{ok + "max_keys 0", "max_keys \"0\" is not a positive whole number, at Testfile:4"},
		{ok + "max_keys ten", "max_keys \"ten\" is not a positive whole number, at Testfile:4"},
		{ok + "max_keys 1 2", "wrong argument count or unexpected line ending after '1', at Testfile:4"},
		{ok + "expiry", "wrong argument count or unexpected line ending after 'expiry', at Testfile:4"},
		{ok + "expiry soon", "expiry \"soon\" is not a positive duration such as 90d or 24h, at Testfile:4"},
		{ok + "expiry -1h", "expiry \"-1h\" is not a positive duration such as 90d or 24h, at Testfile:4"},
		{ok + "expiry 1d\nexpiry 2d", "apikey_portal: expiry given more than once, at Testfile:5"},
		{ok + "rotation_grace", "wrong argument count or unexpected line ending after 'rotation_grace', at Testfile:4"},
		{ok + "rotation_grace 0s", "rotation_grace \"0s\" is not a positive duration such as 90d or 24h, at Testfile:4"},
		{ok + "rotation_grace 1h\nrotation_grace 2h", "apikey_portal: rotation_grace given more than once, at Testfile:5"},
		{ok + "approve_prod now", "wrong argument count or unexpected line ending after 'now', at Testfile:4"},
		{ok + "approve_prod\napprove_prod", "apikey_portal: approve_prod given more than once, at Testfile:5"},
		{ok + "admins", "wrong argument count or unexpected line ending after 'admins', at Testfile:4"},
		{ok + "audit_log", "wrong argument count or unexpected line ending after 'audit_log', at Testfile:4"},
		{ok + "audit_log /a /b", "wrong argument count or unexpected line ending after '/a', at Testfile:4"},
		{ok + "audit_log /a\naudit_log /b", "apikey_portal: audit_log given more than once, at Testfile:5"},
		{ok + "user", "wrong argument count or unexpected line ending after 'user', at Testfile:4"},
		{ok + "user {a}\nuser {b}", "apikey_portal: user given more than once, at Testfile:5"},
		{ok + "groups", "groups: want groups <placeholder>, e.g. groups {http.request.header.X-Auth-Request-Groups}, at Testfile:4"},
		{ok + "groups {a} {b}", "groups: want groups <placeholder>, e.g. groups {http.request.header.X-Auth-Request-Groups}, at Testfile:4"},
		{ok + "groups {a}\ngroups {b}", "apikey_portal: groups given more than once, at Testfile:5"},
		{ok + "team_groups", "team_groups: name the groups that count as teams, at Testfile:4"},
		{ok + "team_groups ok a,b", "team_groups \"a,b\": a team's name is made of ASCII letters, digits and . _ - @ : / +; ',' is not, at Testfile:4"},
		{ok + "team ml", "team: want team <name> <member> ..., got 1 arguments, at Testfile:4"},
		{ok + "team \"m l\" alice", "team \"m l\": a team's name is made of ASCII letters, digits and . _ - @ : / +; ' ' is not, at Testfile:4"},
		{ok + "team ml alice\nteam ml bob", "team ml is defined twice; list all its members on one line, at Testfile:5"},
		{ok + "playground_url", "wrong argument count or unexpected line ending after 'playground_url', at Testfile:4"},
		{ok + "playground_url http://a\nplayground_url http://b", "apikey_portal: playground_url given more than once, at Testfile:5"},
		{ok + "logout_url", "wrong argument count or unexpected line ending after 'logout_url', at Testfile:4"},
		{ok + "logout_url /a\nlogout_url /b", "apikey_portal: logout_url given more than once, at Testfile:5"},
		{ok + "max_rate", "wrong argument count or unexpected line ending after 'max_rate', at Testfile:4"},
		{ok + "max_rate fast", "max_rate: rate \"fast\": want <n>/s, <n>/m or <n>/h, at Testfile:4"},
		{ok + "max_rate 10/d", "max_rate: rate \"10/d\": unit \"d\" is not s, m or h, at Testfile:4"},
		{ok + "max_rate 1/s\nmax_rate 2/s", "apikey_portal: max_rate given more than once, at Testfile:5"},
		{ok + "max_quota_per_day", "wrong argument count or unexpected line ending after 'max_quota_per_day', at Testfile:4"},
		{ok + "max_quota_per_day -5", "max_quota_per_day \"-5\" is not a positive whole number, at Testfile:4"},
		{ok + "max_quota_per_day 5\nmax_quota_per_day 6", "apikey_portal: max_quota_per_day given more than once, at Testfile:5"},
		{ok + "max_tokens_per_day lots", "max_tokens_per_day \"lots\" is not a positive whole number, at Testfile:4"},
		{ok + "max_tokens_per_day 5\nmax_tokens_per_day 6", "apikey_portal: max_tokens_per_day given more than once, at Testfile:5"},
		{ok + "max_tokens_per_minute", "wrong argument count or unexpected line ending after 'max_tokens_per_minute', at Testfile:4"},
		{ok + "max_tokens_per_minute 0", "max_tokens_per_minute \"0\" is not a positive whole number, at Testfile:4"},
		{ok + "max_tokens_per_minute 5\nmax_tokens_per_minute 6", "apikey_portal: max_tokens_per_minute given more than once, at Testfile:5"},
		{ok + "models", "models: name the models (or patterns such as llama3*) developers may allow their keys, at Testfile:4"},
		{ok + "webhooks_file", "wrong argument count or unexpected line ending after 'webhooks_file', at Testfile:4"},
		{ok + "webhooks_file /a\nwebhooks_file /b", "apikey_portal: webhooks_file given more than once, at Testfile:5"},
		{ok + "webhooks_loopback on", "wrong argument count or unexpected line ending after 'on', at Testfile:4"},
		{ok + "webhooks_loopback\nwebhooks_loopback", "apikey_portal: webhooks_loopback given more than once, at Testfile:5"},
		{ok + "colour blue", "unrecognized apikey_portal subdirective \"colour\", at Testfile:4"},
		{ok + "colour blue\ncolour red", "unrecognized apikey_portal subdirective \"colour\", at Testfile:4"},
		{"service echo /e", "apikey_portal: keys is required: keys file <path> or keys redis {…}, at Testfile:3"},
		{"keys file /tmp/k.json", "apikey_portal: name at least one service developers may choose: service <name> <path>, at Testfile:3"},
	} {
		if _, err := portalBlock(c.body); err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got: %v\nwant: %s", c.body, err, c.want)
		}
	}
}

// TestPortalCaddyfileEverySubdirective: a block with every subdirective
// (every one the table of parsers has), the repeatable ones repeated,
// becomes the portal's settings.
func TestPortalCaddyfileEverySubdirective(t *testing.T) {
	const block = `keys file /tmp/k.json
base_path /dev
service echo /e
service llm /v1/models X-Key Token {
	description "A model server"
	docs https://docs.example/llm
}
types dev prod
max_role admin
custom_permissions
max_keys 3
expiry 30d
rotation_grace 2h
approve_prod
admins alice
admins bob carol
audit_log /var/log/portal.log
user {http.request.header.X-User}
groups {http.request.header.X-Groups}
team_groups ml
team_groups sre ops
team ml alice bob
team sre carol
playground_url http://127.0.0.1:8080
logout_url /oauth2/sign_out
max_rate 10/s
max_quota_per_day 1000
max_tokens_per_day 50000
max_tokens_per_minute 2000
models llama3*
models gpt-4o
webhooks_file /var/lib/hooks.json
webhooks_loopback`
	given := map[string]bool{}
	for _, line := range strings.Split(block, "\n") {
		given[strings.Fields(line)[0]] = true
	}
	for name := range portalSubdirectives {
		if !given[name] {
			t.Errorf("the block lacks %s", name)
		}
	}
	p, err := portalBlock(block)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"keys":{"path":"/tmp/k.json","source":"file"},"base_path":"/dev","services":[{"name":"echo","path":"/e"},{"name":"llm","path":"/v1/models","header":"X-Key","scheme":"Token","description":"A model server","docs":"https://docs.example/llm"}],"types":["dev","prod"],"max_role":"admin","custom_permissions":true,"max_keys":3,"expiry":2592000000000000,"rotation_grace":7200000000000,"approve_prod":true,"admins":["alice","bob","carol"],"audit_log":"/var/log/portal.log","user":"{http.request.header.X-User}","groups":"{http.request.header.X-Groups}","team_groups":["ml","sre","ops"],"teams":[{"name":"ml","members":["alice","bob"]},{"name":"sre","members":["carol"]}],"playground_url":"http://127.0.0.1:8080","logout_url":"/oauth2/sign_out","max_rate":"10/s","max_quota_per_day":1000,"max_tokens_per_day":50000,"max_tokens_per_minute":2000,"models":["llama3*","gpt-4o"],"webhooks_file":"/var/lib/hooks.json","webhooks_loopback":true}`
	if string(got) != want {
		t.Errorf("the portal's settings:\n got: %s\nwant: %s", got, want)
	}
}
