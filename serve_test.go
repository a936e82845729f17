package apikey

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// gatewayKeys are the keys the integration tests use, one per situation.
type gatewayKeys struct {
	reader, writer, admin, custom, revoked, expired, notYetExpired,
	ipBound, noServices, mistyped, rotatedNew, rotatedGrace, rotatedEnded, ollamaOnlyProd gatewaytest.Key
}

func makeGatewayKeys(t *testing.T) (gatewayKeys, []keystore.Record) {
	now := time.Now().UTC()
	var k gatewayKeys
	k.reader = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_reader", Name: "Reader key", Role: "reader", Services: []string{"ollama"}})
	k.writer = gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_writer", Role: "writer", Type: "prod", Services: []string{"ollama", "n8n"}})
	k.admin = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_admin", Role: "admin", Services: []string{"*"}})
	k.custom = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_custom", Role: "custom", Services: []string{"ollama"},
		Permissions: []string{"GET /api/tags", "POST /api/chat"}})
	k.revoked = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_revoked", Role: "admin", Services: []string{"*"}, Revoked: true})
	k.expired = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_expired", Role: "admin", Services: []string{"*"},
		ExpiresAt: now.Add(-time.Minute).Format(time.RFC3339)})
	k.notYetExpired = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_not_yet_expired", Role: "admin", Services: []string{"*"},
		ExpiresAt: now.Add(time.Hour).Format(time.RFC3339)})
	k.ipBound = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ip_bound", Role: "admin", Services: []string{"*"},
		AllowedIPs: []string{"203.0.113.0/24", "2001:db8::1"}})
	k.noServices = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_no_services", Role: "admin"})
	k.ollamaOnlyProd = gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_ollama_only", Role: "admin", Services: []string{"ollama"}})
	// A record that says prod, holding the hash of a dev key.
	k.mistyped = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_mistyped", Role: "admin", Type: "prod", Services: []string{"*"}})

	k.rotatedNew = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_rotated", Role: "reader", Services: []string{"ollama"}})
	k.rotatedGrace = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	k.rotatedEnded = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	graceUntil := now.Add(time.Hour).Truncate(time.Second)
	k.rotatedNew.Record.PreviousHashes = []keystore.PreviousHash{
		{Hash: k.rotatedGrace.Record.Hash, ValidUntil: graceUntil.Format(time.RFC3339)},
		{Hash: k.rotatedEnded.Record.Hash, ValidUntil: now.Add(-time.Second).Format(time.RFC3339)},
	}

	var records []keystore.Record
	for _, key := range []gatewaytest.Key{k.reader, k.writer, k.admin, k.custom, k.revoked, k.expired, k.notYetExpired,
		k.ipBound, k.noServices, k.mistyped, k.rotatedNew, k.ollamaOnlyProd} {
		records = append(records, key.Record)
	}
	return k, records
}

// gateway is a running Caddy with the apikey handler on several routes, in
// front of one recording upstream.
type gateway struct {
	url       string
	up        *gatewaytest.Upstream
	keys      gatewayKeys
	logPath   string
	accessLog string
}

const ollamaToken = "ollama-upstream-token-0001"

func startGateway(t *testing.T) *gateway {
	t.Setenv("APIKEY_TEST_OLLAMA_TOKEN", ollamaToken)
	// From the environment, not literal: a literal value would be in
	// Caddy's DEBUG config dump ("adjusted config"), as the README says.
	t.Setenv("APIKEY_TEST_N8N_TOKEN", "n8n-upstream-key-0002")
	keys, records := makeGatewayKeys(t)
	g := &gateway{
		up:        gatewaytest.NewUpstream(t),
		keys:      keys,
		logPath:   filepath.Join(t.TempDir(), "caddy.log"),
		accessLog: filepath.Join(t.TempDir(), "access.log"),
	}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	keyFile := gatewaytest.WriteKeyFile(t, records...)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
		level DEBUG
		format filter {
			request>headers>X-Api-Key delete
			request>headers>X-Gateway-Key delete
			request>headers>X-N8n-Api-Key delete
			request>headers>X-Upstream-Token delete
		}
	}
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}

http://127.0.0.1:%[2]d {
	log {
		output file %[3]s
		format filter {
			request>headers>X-Api-Key delete
			request>headers>X-Gateway-Key delete
		}
	}
	handle_path /ollama/* {
		apikey {
			keys file %[4]s
			service ollama
			upstream_auth {env.APIKEY_TEST_OLLAMA_TOKEN}
		}
		reverse_proxy %[5]s {
			header_up X-Seen-Id {http.apikey.id}
			header_up X-Seen-Name {http.apikey.name}
			header_up X-Seen-Role {http.apikey.role}
			header_up X-Seen-Type {http.apikey.type}
			header_up X-Seen-Service {http.apikey.service}
			header_up X-Seen-User {http.auth.user.id}
		}
	}
	handle_path /n8n/* {
		apikey {
			keys file %[4]s
			service n8n
			allow_types prod
			upstream_auth {env.APIKEY_TEST_N8N_TOKEN}
		}
		reverse_proxy %[5]s
	}
	handle_path /plain/* {
		apikey {
			keys file %[4]s
			key_from header X-Gateway-Key
			key_from header Authorization Token
			upstream_auth header X-Upstream-Token "tok-{http.apikey.id}"
		}
		reverse_proxy %[5]s
	}
	respond "no route" 404
}
`, g.logPath, port, g.accessLog, keyFile, g.up.Addr()))
	return g
}

// TestResponses drives every refusal and a success through a real Caddy and
// checks status, code, reason, headers, and that refused requests never
// reach the upstream.
func TestResponses(t *testing.T) {
	g := startGateway(t)
	k := g.keys
	badChecksum := k.reader.Secret[:len(k.reader.Secret)-1] + map[bool]string{true: "1", false: "0"}[strings.HasSuffix(k.reader.Secret, "0")]
	unknown := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{}).Secret

	cases := []struct {
		name           string
		method, path   string
		headers        []string
		status         int
		code, reason   string
		wwwAuthError   bool
		reachesUpsteam bool
	}{
		{"no key", "GET", "/ollama/api/tags", nil, 401, "missing_key", "", false, false},
		{"empty bearer", "GET", "/ollama/api/tags", []string{"Authorization", "Bearer "}, 401, "missing_key", "", false, false},
		{"bad checksum", "GET", "/ollama/api/tags", []string{"Authorization", "Bearer " + badChecksum}, 401, "invalid_key", "", true, false},
		{"garbage", "GET", "/ollama/api/tags", []string{"X-API-Key", "hello"}, 401, "invalid_key", "", true, false},
		{"well formed but unknown", "GET", "/ollama/api/tags", []string{"X-API-Key", unknown}, 401, "invalid_key", "", true, false},
		{"record type contradicts prefix", "GET", "/ollama/api/tags", k.mistyped.Bearer(), 401, "invalid_key", "", true, false},
		{"revoked", "GET", "/ollama/api/tags", k.revoked.Bearer(), 401, "revoked_key", "", true, false},
		{"expired", "GET", "/ollama/api/tags", k.expired.Bearer(), 401, "expired_key", "", true, false},
		{"reader may not POST", "POST", "/ollama/api/chat", k.reader.Bearer(), 403, "forbidden", "method", false, false},
		{"writer may not DELETE", "DELETE", "/ollama/api/delete", k.writer.Bearer(), 403, "forbidden", "method", false, false},
		{"reader not allowed n8n", "GET", "/n8n/api/v1/workflows", k.reader.Bearer(), 403, "forbidden", "key_type", false, false},
		{"dev key on prod-only route", "GET", "/n8n/api/v1/workflows", k.admin.Bearer(), 403, "forbidden", "key_type", false, false},
		{"key without services", "GET", "/ollama/api/tags", k.noServices.Bearer(), 403, "forbidden", "service", false, false},
		{"key whose services lack the route's", "GET", "/n8n/api/v1/workflows", k.ollamaOnlyProd.Bearer(), 403, "forbidden", "service", false, false},
		{"prod writer with n8n", "GET", "/n8n/api/v1/workflows", k.writer.Bearer(), 200, "", "", false, true},
		{"ip not allowed", "GET", "/ollama/api/tags", k.ipBound.Bearer(), 403, "forbidden", "ip", false, false},
		{"custom: allowed GET", "GET", "/ollama/api/tags", k.custom.Bearer(), 200, "", "", false, true},
		{"custom: allowed POST", "POST", "/ollama/api/chat", k.custom.Bearer(), 200, "", "", false, true},
		{"custom: POST elsewhere", "POST", "/ollama/api/pull", k.custom.Bearer(), 403, "forbidden", "method", false, false},
		{"custom: GET elsewhere", "GET", "/ollama/api/ps", k.custom.Bearer(), 403, "forbidden", "method", false, false},
		{"reader GET", "GET", "/ollama/api/tags", k.reader.Bearer(), 200, "", "", false, true},
		{"reader HEAD", "HEAD", "/ollama/api/tags", k.reader.Bearer(), 200, "", "", false, true},
		{"reader via X-API-Key", "GET", "/ollama/api/tags", []string{"X-API-Key", k.reader.Secret}, 200, "", "", false, true},
		{"writer POST", "POST", "/ollama/api/chat", k.writer.Bearer(), 200, "", "", false, true},
		{"admin DELETE", "DELETE", "/ollama/api/delete", k.admin.Bearer(), 200, "", "", false, true},
		{"not yet expired", "GET", "/ollama/api/tags", k.notYetExpired.Bearer(), 200, "", "", false, true},
		{"plain route, first location", "GET", "/plain/x", []string{"X-Gateway-Key", k.noServices.Secret}, 200, "", "", false, true},
		{"plain route, second location", "GET", "/plain/x", []string{"Authorization", "Token " + k.noServices.Secret}, 200, "", "", false, true},
		{"plain route ignores default locations", "GET", "/plain/x", k.admin.Bearer(), 401, "missing_key", "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := g.up.Count()
			r := gatewaytest.Send(t, c.method, g.url+c.path, c.headers...)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d (body %q)", r.Status, c.status, r.Body)
			}
			if reached := g.up.Count() > before; reached != c.reachesUpsteam {
				t.Errorf("reached upstream = %v, want %v", reached, c.reachesUpsteam)
			}
			for i := 1; i < len(c.headers); i += 2 {
				if v := c.headers[i]; len(v) > 20 && strings.Contains(r.Body, strings.TrimPrefix(v, "Bearer ")) {
					t.Error("the response body repeats the key")
				}
			}
			if c.status < 400 {
				return
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if c.method == "HEAD" {
				return
			}
			if r.Err.Status != c.status || r.Err.Code != c.code || r.Err.Reason != c.reason {
				t.Errorf("error body %+v, want status %d code %q reason %q", r.Err, c.status, c.code, c.reason)
			}
			if r.Err.Message == "" {
				t.Error("no message")
			}
			www := r.Header.Get("WWW-Authenticate")
			switch {
			case c.status == 401 && c.wwwAuthError:
				if !strings.HasPrefix(www, `Bearer realm="`) || !strings.HasSuffix(www, `, error="invalid_token"`) {
					t.Errorf("WWW-Authenticate %q", www)
				}
			case c.status == 401:
				if !strings.HasPrefix(www, `Bearer realm="`) || strings.Contains(www, "error=") {
					t.Errorf("WWW-Authenticate %q", www)
				}
			default:
				if www != "" {
					t.Errorf("WWW-Authenticate on a %d: %q", c.status, www)
				}
			}
		})
	}

	// The realm names the service, or "apikey" when the route names none.
	if www := gatewaytest.Send(t, "GET", g.url+"/ollama/x").Header.Get("WWW-Authenticate"); www != `Bearer realm="ollama"` {
		t.Errorf("ollama realm: %q", www)
	}
	if www := gatewaytest.Send(t, "GET", g.url+"/plain/x").Header.Get("WWW-Authenticate"); www != `Bearer realm="apikey"` {
		t.Errorf("plain realm: %q", www)
	}
}

// TestAdmittedRequestCarriesUpstreamCredentialNotKey checks what the
// upstream receives: never the client's key, always its own credential.
func TestAdmittedRequestCarriesUpstreamCredentialNotKey(t *testing.T) {
	g := startGateway(t)
	k := g.keys

	t.Run("ollama preset replaces the bearer", func(t *testing.T) {
		gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.reader.Bearer()...)
		got := g.up.Last(t)
		if got.Path != "/api/tags" {
			t.Errorf("path %q", got.Path)
		}
		if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+ollamaToken {
			t.Errorf("Authorization reaching the upstream is not its credential (%d values)", len(v))
		}
		assertNoKey(t, got, k.reader)
		for h, want := range map[string]string{
			"X-Seen-Id": "k_reader", "X-Seen-User": "k_reader", "X-Seen-Name": "Reader key",
			"X-Seen-Role": "reader", "X-Seen-Type": "dev", "X-Seen-Service": "ollama",
		} {
			if got := got.Header.Get(h); got != want {
				t.Errorf("placeholder via %s = %q, want %q", h, got, want)
			}
		}
	})

	t.Run("client-sent credential header is replaced", func(t *testing.T) {
		gatewaytest.Send(t, "GET", g.url+"/n8n/api/v1/workflows", "X-API-Key", k.writer.Secret, "X-N8N-API-KEY", "client-forged")
		got := g.up.Last(t)
		if v := got.Header.Values("X-N8N-API-KEY"); len(v) != 1 || v[0] != "n8n-upstream-key-0002" {
			t.Errorf("X-N8N-API-KEY = %q", v)
		}
		assertNoKey(t, got, k.writer)
	})

	t.Run("key sent twice never reaches the upstream", func(t *testing.T) {
		for _, hs := range [][]string{
			{"X-API-Key", k.writer.Secret, "Authorization", k.writer.Secret},
			{"X-API-Key", k.writer.Secret, "Authorization", "Token " + k.writer.Secret},
			{"Authorization", "Bearer " + k.writer.Secret, "X-API-Key", "junk", "X-API-Key", k.writer.Secret},
		} {
			if r := gatewaytest.Send(t, "GET", g.url+"/n8n/api/v1/workflows", hs...); r.Status != 200 {
				t.Fatalf("status %d", r.Status)
			}
			assertNoKey(t, g.up.Last(t), k.writer)
		}
	})

	t.Run("key in both default headers is removed from both", func(t *testing.T) {
		gatewaytest.Send(t, "GET", g.url+"/plain/x", "X-Gateway-Key", k.admin.Secret, "Authorization", "Token "+k.admin.Secret)
		got := g.up.Last(t)
		assertNoKey(t, got, k.admin)
		if v := got.Header.Get("X-Upstream-Token"); v != "tok-k_admin" {
			t.Errorf("X-Upstream-Token = %q", v)
		}
	})

	t.Run("other client headers pass", func(t *testing.T) {
		gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", "X-API-Key", k.reader.Secret, "Authorization", "Basic dXNlcjpwYXNz", "X-Trace", "abc")
		got := g.up.Last(t)
		if got.Header.Get("X-Trace") != "abc" {
			t.Error("an unrelated header was lost")
		}
		if got.Header.Get("Authorization") != "Bearer "+ollamaToken {
			t.Error("Authorization is not the upstream's credential")
		}
		assertNoKey(t, got, k.reader)
	})
}

func assertNoKey(t *testing.T, got gatewaytest.Seen, k gatewaytest.Key) {
	t.Helper()
	for name, vals := range got.Header {
		for _, v := range vals {
			if strings.Contains(v, k.Secret) {
				t.Errorf("the upstream received key %s in %s", k.Record.ID, name)
			}
		}
	}
}

// TestRotationGrace: an old secret works until valid_until, as the same key,
// with Deprecation and Sunset; after it, it is refused.
func TestRotationGrace(t *testing.T) {
	g := startGateway(t)
	k := g.keys

	r := gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.rotatedNew.Bearer()...)
	if r.Status != 200 || r.Header.Get("Deprecation") != "" || r.Header.Get("Sunset") != "" {
		t.Fatalf("new secret: status %d, Deprecation %q, Sunset %q", r.Status, r.Header.Get("Deprecation"), r.Header.Get("Sunset"))
	}

	r = gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.rotatedGrace.Bearer()...)
	if r.Status != 200 {
		t.Fatalf("old secret in grace: status %d %s", r.Status, r.Body)
	}
	if r.Header.Get("Deprecation") != "true" {
		t.Errorf("Deprecation = %q", r.Header.Get("Deprecation"))
	}
	sunset, err := http.ParseTime(r.Header.Get("Sunset"))
	want, _ := time.Parse(time.RFC3339, k.rotatedNew.Record.PreviousHashes[0].ValidUntil)
	if err != nil || !sunset.Equal(want) {
		t.Errorf("Sunset = %q, want %s", r.Header.Get("Sunset"), want.Format(http.TimeFormat))
	}
	if id := g.up.Last(t).Header.Get("X-Seen-Id"); id != "k_rotated" {
		t.Errorf("old secret admitted as %q, want the same key id", id)
	}

	// A refusal to an old secret says so too.
	r = gatewaytest.Send(t, "POST", g.url+"/ollama/api/chat", k.rotatedGrace.Bearer()...)
	if r.Status != 403 || r.Header.Get("Deprecation") != "true" || r.Header.Get("Sunset") == "" {
		t.Errorf("403 to an old secret: %d, Deprecation %q, Sunset %q", r.Status, r.Header.Get("Deprecation"), r.Header.Get("Sunset"))
	}

	// Past its grace, an old secret is refused like any unusable key:
	// a 401 tells no sunset (the secret is already dead).
	r = gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.rotatedEnded.Bearer()...)
	if r.Status != 401 || r.Err.Code != "expired_key" {
		t.Errorf("old secret past valid_until: %d %q", r.Status, r.Err.Code)
	}
	if r.Header.Get("Deprecation") != "" || r.Header.Get("Sunset") != "" {
		t.Errorf("401 to an old secret past its grace: Deprecation %q, Sunset %q", r.Header.Get("Deprecation"), r.Header.Get("Sunset"))
	}
}

// TestIPRules uses trusted_proxies so that Caddy's client IP comes from
// X-Forwarded-For while the traffic stays on loopback.
func TestIPRules(t *testing.T) {
	g := startGateway(t)
	for ip, want := range map[string]int{
		"203.0.113.7":   200,
		"203.0.113.250": 200,
		"2001:db8::1":   200,
		"203.0.114.7":   403,
		"2001:db8::2":   403,
		"198.51.100.1":  403,
	} {
		r := gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", "Authorization", "Bearer "+g.keys.ipBound.Secret, "X-Forwarded-For", ip)
		if r.Status != want {
			t.Errorf("from %s: status %d, want %d", ip, r.Status, want)
		}
		if want == 403 && r.Err.Reason != "ip" {
			t.Errorf("from %s: reason %q", ip, r.Err.Reason)
		}
	}
	// Straight from loopback, without the header: not in the allowed ranges.
	if r := gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", g.keys.ipBound.Bearer()...); r.Status != 403 {
		t.Errorf("from loopback: %d", r.Status)
	}
}

// TestLogsNeverHoldKeys sends allowed and denied traffic, then reads Caddy's
// own log at DEBUG and the access log, both with the filters the README
// recommends: denials are logged with the key id, the access log shows
// user_id, and no line holds a key or a hash. (Without the filters, Caddy's
// own handlers that run before apikey, such as handle_path's rewrite, log
// request headers at DEBUG.)
func TestLogsNeverHoldKeys(t *testing.T) {
	g := startGateway(t)
	k := g.keys
	sent := []gatewaytest.Key{k.reader, k.revoked, k.custom, k.ipBound}
	gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", "X-API-Key", k.reader.Secret)
	gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.revoked.Bearer()...)
	gatewaytest.Send(t, "POST", g.url+"/ollama/api/pull", "X-API-Key", k.custom.Secret)
	gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.ipBound.Bearer()...)
	unknown := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", "X-API-Key", unknown.Secret)
	gatewaytest.Send(t, "GET", g.url+"/plain/x", "X-Gateway-Key", k.admin.Secret)
	gatewaytest.Send(t, "GET", g.url+"/plain/x", "Authorization", "Token "+k.noServices.Secret)
	gatewaytest.Send(t, "GET", g.url+"/n8n/api/v1/workflows", k.writer.Bearer()...)
	sent = append(sent, unknown, k.admin, k.noServices, k.writer)

	gatewaytest.WaitForLog(t, g.logPath, `"decision":"forbidden"`)
	access := gatewaytest.WaitForLog(t, g.accessLog, `"user_id":"k_reader"`)
	// The upstream credentials too: reverse_proxy logs the headers it sends
	// at DEBUG, and only the README's filter keeps X-N8N-API-KEY out.
	logs := gatewaytest.WaitForLog(t, g.logPath, "upstream roundtrip")
	for _, secret := range []string{ollamaToken, "n8n-upstream-key-0002"} {
		if strings.Contains(logs, secret) || strings.Contains(access, secret) {
			t.Errorf("a log holds an upstream credential (%d bytes)", len(secret))
		}
	}
	for _, s := range sent {
		digest := strings.TrimPrefix(s.Record.Hash, "sha256:")
		for name, text := range map[string]string{"caddy log": logs, "access log": access} {
			if strings.Contains(text, s.Secret) || strings.Contains(text, s.Secret[len(s.Secret)-12:]) {
				t.Errorf("%s holds key %s", name, s.Record.ID)
			}
			if strings.Contains(text, digest) || strings.Contains(text, digest[:16]) {
				t.Errorf("%s holds the hash of key %s", name, s.Record.ID)
			}
		}
	}
	for _, want := range []string{
		`"decision":"revoked_key"`, `"key_id":"k_revoked"`,
		`"reason":"method"`, `"key_id":"k_custom"`,
		`"reason":"ip"`, `"key_id":"k_ip_bound"`,
		`"decision":"invalid_key"`,
		`"msg":"request allowed"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("caddy log lacks %s", want)
		}
	}
}
