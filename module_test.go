package apikey

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// gatewayKeys are the keys the integration tests use, one per situation.
type gatewayKeys struct {
	reader, writer, admin, custom, revoked, expired, notYetExpired,
	ipBound, noServices, mistyped, rotatedNew, rotatedGrace, rotatedEnded, ollamaOnlyProd testKey
}

func makeGatewayKeys(t *testing.T) (gatewayKeys, []keystore.Record) {
	now := time.Now().UTC()
	var k gatewayKeys
	k.reader = newKey(t, keystore.Dev, keystore.Record{ID: "k_reader", Name: "Reader key", Role: "reader", Services: []string{"ollama"}})
	k.writer = newKey(t, keystore.Prod, keystore.Record{ID: "k_writer", Role: "writer", Type: "prod", Services: []string{"ollama", "n8n"}})
	k.admin = newKey(t, keystore.Dev, keystore.Record{ID: "k_admin", Role: "admin", Services: []string{"*"}})
	k.custom = newKey(t, keystore.Dev, keystore.Record{ID: "k_custom", Role: "custom", Services: []string{"ollama"},
		Permissions: []string{"GET /api/tags", "POST /api/chat"}})
	k.revoked = newKey(t, keystore.Dev, keystore.Record{ID: "k_revoked", Role: "admin", Services: []string{"*"}, Revoked: true})
	k.expired = newKey(t, keystore.Dev, keystore.Record{ID: "k_expired", Role: "admin", Services: []string{"*"},
		ExpiresAt: now.Add(-time.Minute).Format(time.RFC3339)})
	k.notYetExpired = newKey(t, keystore.Dev, keystore.Record{ID: "k_not_yet_expired", Role: "admin", Services: []string{"*"},
		ExpiresAt: now.Add(time.Hour).Format(time.RFC3339)})
	k.ipBound = newKey(t, keystore.Dev, keystore.Record{ID: "k_ip_bound", Role: "admin", Services: []string{"*"},
		AllowedIPs: []string{"203.0.113.0/24", "2001:db8::1"}})
	k.noServices = newKey(t, keystore.Dev, keystore.Record{ID: "k_no_services", Role: "admin"})
	k.ollamaOnlyProd = newKey(t, keystore.Prod, keystore.Record{ID: "k_ollama_only", Role: "admin", Services: []string{"ollama"}})
	// A record that says prod, holding the hash of a dev key.
	k.mistyped = newKey(t, keystore.Dev, keystore.Record{ID: "k_mistyped", Role: "admin", Type: "prod", Services: []string{"*"}})

	k.rotatedNew = newKey(t, keystore.Dev, keystore.Record{ID: "k_rotated", Role: "reader", Services: []string{"ollama"}})
	k.rotatedGrace = newKey(t, keystore.Dev, keystore.Record{})
	k.rotatedEnded = newKey(t, keystore.Dev, keystore.Record{})
	graceUntil := now.Add(time.Hour).Truncate(time.Second)
	k.rotatedNew.record.PreviousHashes = []keystore.PreviousHash{
		{Hash: k.rotatedGrace.record.Hash, ValidUntil: graceUntil.Format(time.RFC3339)},
		{Hash: k.rotatedEnded.record.Hash, ValidUntil: now.Add(-time.Second).Format(time.RFC3339)},
	}

	var records []keystore.Record
	for _, key := range []testKey{k.reader, k.writer, k.admin, k.custom, k.revoked, k.expired, k.notYetExpired,
		k.ipBound, k.noServices, k.mistyped, k.rotatedNew, k.ollamaOnlyProd} {
		records = append(records, key.record)
	}
	return k, records
}

// gateway is a running Caddy with the apikey handler on several routes, in
// front of one recording upstream.
type gateway struct {
	url       string
	up        *upstream
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
		up:        newUpstream(t),
		keys:      keys,
		logPath:   filepath.Join(t.TempDir(), "caddy.log"),
		accessLog: filepath.Join(t.TempDir(), "access.log"),
	}
	port := freePort(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	keyFile := writeKeyFile(t, records...)
	startCaddy(t, fmt.Sprintf(`{
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
`, g.logPath, port, g.accessLog, keyFile, g.up.addr()))
	return g
}

func bearer(k testKey) []string { return []string{"Authorization", "Bearer " + k.secret} }

// TestResponses drives every refusal and a success through a real Caddy and
// checks status, code, reason, headers, and that refused requests never
// reach the upstream.
func TestResponses(t *testing.T) {
	g := startGateway(t)
	k := g.keys
	badChecksum := k.reader.secret[:len(k.reader.secret)-1] + map[bool]string{true: "1", false: "0"}[strings.HasSuffix(k.reader.secret, "0")]
	unknown := newKey(t, keystore.Dev, keystore.Record{}).secret

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
		{"record type contradicts prefix", "GET", "/ollama/api/tags", bearer(k.mistyped), 401, "invalid_key", "", true, false},
		{"revoked", "GET", "/ollama/api/tags", bearer(k.revoked), 401, "revoked_key", "", true, false},
		{"expired", "GET", "/ollama/api/tags", bearer(k.expired), 401, "expired_key", "", true, false},
		{"reader may not POST", "POST", "/ollama/api/chat", bearer(k.reader), 403, "forbidden", "method", false, false},
		{"writer may not DELETE", "DELETE", "/ollama/api/delete", bearer(k.writer), 403, "forbidden", "method", false, false},
		{"reader not allowed n8n", "GET", "/n8n/api/v1/workflows", bearer(k.reader), 403, "forbidden", "key_type", false, false},
		{"dev key on prod-only route", "GET", "/n8n/api/v1/workflows", bearer(k.admin), 403, "forbidden", "key_type", false, false},
		{"key without services", "GET", "/ollama/api/tags", bearer(k.noServices), 403, "forbidden", "service", false, false},
		{"key whose services lack the route's", "GET", "/n8n/api/v1/workflows", bearer(k.ollamaOnlyProd), 403, "forbidden", "service", false, false},
		{"prod writer with n8n", "GET", "/n8n/api/v1/workflows", bearer(k.writer), 200, "", "", false, true},
		{"ip not allowed", "GET", "/ollama/api/tags", bearer(k.ipBound), 403, "forbidden", "ip", false, false},
		{"custom: allowed GET", "GET", "/ollama/api/tags", bearer(k.custom), 200, "", "", false, true},
		{"custom: allowed POST", "POST", "/ollama/api/chat", bearer(k.custom), 200, "", "", false, true},
		{"custom: POST elsewhere", "POST", "/ollama/api/pull", bearer(k.custom), 403, "forbidden", "method", false, false},
		{"custom: GET elsewhere", "GET", "/ollama/api/ps", bearer(k.custom), 403, "forbidden", "method", false, false},
		{"reader GET", "GET", "/ollama/api/tags", bearer(k.reader), 200, "", "", false, true},
		{"reader HEAD", "HEAD", "/ollama/api/tags", bearer(k.reader), 200, "", "", false, true},
		{"reader via X-API-Key", "GET", "/ollama/api/tags", []string{"X-API-Key", k.reader.secret}, 200, "", "", false, true},
		{"writer POST", "POST", "/ollama/api/chat", bearer(k.writer), 200, "", "", false, true},
		{"admin DELETE", "DELETE", "/ollama/api/delete", bearer(k.admin), 200, "", "", false, true},
		{"not yet expired", "GET", "/ollama/api/tags", bearer(k.notYetExpired), 200, "", "", false, true},
		{"plain route, first location", "GET", "/plain/x", []string{"X-Gateway-Key", k.noServices.secret}, 200, "", "", false, true},
		{"plain route, second location", "GET", "/plain/x", []string{"Authorization", "Token " + k.noServices.secret}, 200, "", "", false, true},
		{"plain route ignores default locations", "GET", "/plain/x", bearer(k.admin), 401, "missing_key", "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := g.up.count()
			r := send(t, c.method, g.url+c.path, c.headers...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d (body %q)", r.status, c.status, r.body)
			}
			if reached := g.up.count() > before; reached != c.reachesUpsteam {
				t.Errorf("reached upstream = %v, want %v", reached, c.reachesUpsteam)
			}
			for i := 1; i < len(c.headers); i += 2 {
				if v := c.headers[i]; len(v) > 20 && strings.Contains(r.body, strings.TrimPrefix(v, "Bearer ")) {
					t.Error("the response body repeats the key")
				}
			}
			if c.status < 400 {
				return
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if c.method == "HEAD" {
				return
			}
			if r.err.Status != c.status || r.err.Code != c.code || r.err.Reason != c.reason {
				t.Errorf("error body %+v, want status %d code %q reason %q", r.err, c.status, c.code, c.reason)
			}
			if r.err.Message == "" {
				t.Error("no message")
			}
			www := r.header.Get("WWW-Authenticate")
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
	if www := send(t, "GET", g.url+"/ollama/x").header.Get("WWW-Authenticate"); www != `Bearer realm="ollama"` {
		t.Errorf("ollama realm: %q", www)
	}
	if www := send(t, "GET", g.url+"/plain/x").header.Get("WWW-Authenticate"); www != `Bearer realm="apikey"` {
		t.Errorf("plain realm: %q", www)
	}
}

// TestAdmittedRequestCarriesUpstreamCredentialNotKey checks what the
// upstream receives: never the client's key, always its own credential.
func TestAdmittedRequestCarriesUpstreamCredentialNotKey(t *testing.T) {
	g := startGateway(t)
	k := g.keys

	t.Run("ollama preset replaces the bearer", func(t *testing.T) {
		send(t, "GET", g.url+"/ollama/api/tags", bearer(k.reader)...)
		got := g.up.last(t)
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
		send(t, "GET", g.url+"/n8n/api/v1/workflows", "X-API-Key", k.writer.secret, "X-N8N-API-KEY", "client-forged")
		got := g.up.last(t)
		if v := got.Header.Values("X-N8N-API-KEY"); len(v) != 1 || v[0] != "n8n-upstream-key-0002" {
			t.Errorf("X-N8N-API-KEY = %q", v)
		}
		assertNoKey(t, got, k.writer)
	})

	t.Run("key sent twice never reaches the upstream", func(t *testing.T) {
		for _, hs := range [][]string{
			{"X-API-Key", k.writer.secret, "Authorization", k.writer.secret},
			{"X-API-Key", k.writer.secret, "Authorization", "Token " + k.writer.secret},
			{"Authorization", "Bearer " + k.writer.secret, "X-API-Key", "junk", "X-API-Key", k.writer.secret},
		} {
			if r := send(t, "GET", g.url+"/n8n/api/v1/workflows", hs...); r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			assertNoKey(t, g.up.last(t), k.writer)
		}
	})

	t.Run("key in both default headers is removed from both", func(t *testing.T) {
		send(t, "GET", g.url+"/plain/x", "X-Gateway-Key", k.admin.secret, "Authorization", "Token "+k.admin.secret)
		got := g.up.last(t)
		assertNoKey(t, got, k.admin)
		if v := got.Header.Get("X-Upstream-Token"); v != "tok-k_admin" {
			t.Errorf("X-Upstream-Token = %q", v)
		}
	})

	t.Run("other client headers pass", func(t *testing.T) {
		send(t, "GET", g.url+"/ollama/api/tags", "X-API-Key", k.reader.secret, "Authorization", "Basic dXNlcjpwYXNz", "X-Trace", "abc")
		got := g.up.last(t)
		if got.Header.Get("X-Trace") != "abc" {
			t.Error("an unrelated header was lost")
		}
		if got.Header.Get("Authorization") != "Bearer "+ollamaToken {
			t.Error("Authorization is not the upstream's credential")
		}
		assertNoKey(t, got, k.reader)
	})
}

func assertNoKey(t *testing.T, got seenRequest, k testKey) {
	t.Helper()
	for name, vals := range got.Header {
		for _, v := range vals {
			if strings.Contains(v, k.secret) {
				t.Errorf("the upstream received key %s in %s", k.record.ID, name)
			}
		}
	}
}

// TestRotationGrace: an old secret works until valid_until, as the same key,
// with Deprecation and Sunset; after it, it is refused.
func TestRotationGrace(t *testing.T) {
	g := startGateway(t)
	k := g.keys

	r := send(t, "GET", g.url+"/ollama/api/tags", bearer(k.rotatedNew)...)
	if r.status != 200 || r.header.Get("Deprecation") != "" || r.header.Get("Sunset") != "" {
		t.Fatalf("new secret: status %d, Deprecation %q, Sunset %q", r.status, r.header.Get("Deprecation"), r.header.Get("Sunset"))
	}

	r = send(t, "GET", g.url+"/ollama/api/tags", bearer(k.rotatedGrace)...)
	if r.status != 200 {
		t.Fatalf("old secret in grace: status %d %s", r.status, r.body)
	}
	if r.header.Get("Deprecation") != "true" {
		t.Errorf("Deprecation = %q", r.header.Get("Deprecation"))
	}
	sunset, err := http.ParseTime(r.header.Get("Sunset"))
	want, _ := time.Parse(time.RFC3339, k.rotatedNew.record.PreviousHashes[0].ValidUntil)
	if err != nil || !sunset.Equal(want) {
		t.Errorf("Sunset = %q, want %s", r.header.Get("Sunset"), want.Format(http.TimeFormat))
	}
	if id := g.up.last(t).Header.Get("X-Seen-Id"); id != "k_rotated" {
		t.Errorf("old secret admitted as %q, want the same key id", id)
	}

	// A refusal to an old secret says so too.
	r = send(t, "POST", g.url+"/ollama/api/chat", bearer(k.rotatedGrace)...)
	if r.status != 403 || r.header.Get("Deprecation") != "true" || r.header.Get("Sunset") == "" {
		t.Errorf("403 to an old secret: %d, Deprecation %q, Sunset %q", r.status, r.header.Get("Deprecation"), r.header.Get("Sunset"))
	}

	// Past its grace, an old secret is refused like any unusable key:
	// a 401 tells no sunset (the secret is already dead).
	r = send(t, "GET", g.url+"/ollama/api/tags", bearer(k.rotatedEnded)...)
	if r.status != 401 || r.err.Code != "expired_key" {
		t.Errorf("old secret past valid_until: %d %q", r.status, r.err.Code)
	}
	if r.header.Get("Deprecation") != "" || r.header.Get("Sunset") != "" {
		t.Errorf("401 to an old secret past its grace: Deprecation %q, Sunset %q", r.header.Get("Deprecation"), r.header.Get("Sunset"))
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
		r := send(t, "GET", g.url+"/ollama/api/tags", "Authorization", "Bearer "+g.keys.ipBound.secret, "X-Forwarded-For", ip)
		if r.status != want {
			t.Errorf("from %s: status %d, want %d", ip, r.status, want)
		}
		if want == 403 && r.err.Reason != "ip" {
			t.Errorf("from %s: reason %q", ip, r.err.Reason)
		}
	}
	// Straight from loopback, without the header: not in the allowed ranges.
	if r := send(t, "GET", g.url+"/ollama/api/tags", bearer(g.keys.ipBound)...); r.status != 403 {
		t.Errorf("from loopback: %d", r.status)
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
	sent := []testKey{k.reader, k.revoked, k.custom, k.ipBound}
	send(t, "GET", g.url+"/ollama/api/tags", "X-API-Key", k.reader.secret)
	send(t, "GET", g.url+"/ollama/api/tags", bearer(k.revoked)...)
	send(t, "POST", g.url+"/ollama/api/pull", "X-API-Key", k.custom.secret)
	send(t, "GET", g.url+"/ollama/api/tags", bearer(k.ipBound)...)
	unknown := newKey(t, keystore.Dev, keystore.Record{})
	send(t, "GET", g.url+"/ollama/api/tags", "X-API-Key", unknown.secret)
	send(t, "GET", g.url+"/plain/x", "X-Gateway-Key", k.admin.secret)
	send(t, "GET", g.url+"/plain/x", "Authorization", "Token "+k.noServices.secret)
	send(t, "GET", g.url+"/n8n/api/v1/workflows", bearer(k.writer)...)
	sent = append(sent, unknown, k.admin, k.noServices, k.writer)

	readWhenContains(t, g.logPath, `"decision":"forbidden"`)
	access := readWhenContains(t, g.accessLog, `"user_id":"k_reader"`)
	// The upstream credentials too: reverse_proxy logs the headers it sends
	// at DEBUG, and only the README's filter keeps X-N8N-API-KEY out.
	logs := readWhenContains(t, g.logPath, "upstream roundtrip")
	for _, secret := range []string{ollamaToken, "n8n-upstream-key-0002"} {
		if strings.Contains(logs, secret) || strings.Contains(access, secret) {
			t.Errorf("a log holds an upstream credential (%d bytes)", len(secret))
		}
	}
	for _, s := range sent {
		digest := strings.TrimPrefix(s.record.Hash, "sha256:")
		for name, text := range map[string]string{"caddy log": logs, "access log": access} {
			if strings.Contains(text, s.secret) || strings.Contains(text, s.secret[len(s.secret)-12:]) {
				t.Errorf("%s holds key %s", name, s.record.ID)
			}
			if strings.Contains(text, digest) || strings.Contains(text, digest[:16]) {
				t.Errorf("%s holds the hash of key %s", name, s.record.ID)
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

// readWhenCount waits until a log holds want at least n times.
func readWhenCount(t *testing.T, path, want string, n int) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Count(string(data), want) >= n {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held %q %d times:\n%s", filepath.Base(path), want, n, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readWhenContains waits for Caddy's buffered log writer to flush a line.
func readWhenContains(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), want) || time.Now().After(deadline) {
			if !strings.Contains(string(data), want) {
				t.Fatalf("%s never contained %s", filepath.Base(path), want)
			}
			return string(data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBadKeyFileFailsConfigLoad: a broken key file stops the config from
// loading, with an error naming the file, the record and the field.
func TestBadKeyFileFailsConfigLoad(t *testing.T) {
	good := newKey(t, keystore.Dev, keystore.Record{ID: "k_good", Role: "reader"})
	bad := newKey(t, keystore.Dev, keystore.Record{ID: "k_bad", Role: "reader", AllowedIPs: []string{"300.1.2.3"}})
	path := writeKeyFile(t, good.record, bad.record)
	err := loadCaddy(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
	}
	respond "ok"
}`, freePort(t), path))
	if err == nil {
		t.Fatal("config with a bad key file loaded")
	}
	for _, want := range []string{path, `keys[1] (id "k_bad")`, `allowed_ips[0]`, `"300.1.2.3"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), strings.TrimPrefix(bad.record.Hash, "sha256:")) {
		t.Error("the error holds a hash")
	}

	// An upstream credential whose placeholder is unset fails the load too.
	os.Unsetenv("APIKEY_TEST_UNSET_TOKEN")
	err = loadCaddy(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		service ollama
		upstream_auth {env.APIKEY_TEST_UNSET_TOKEN}
	}
	respond "ok"
}`, freePort(t), writeKeyFile(t, good.record)))
	if err == nil || !strings.Contains(err.Error(), "APIKEY_TEST_UNSET_TOKEN") {
		t.Errorf("unset credential: %v", err)
	}
}

// TestRunsBeforeRespondWithoutOrder: with no "order" line, apikey guards a
// site whose only other handler is respond.
func TestRunsBeforeRespondWithoutOrder(t *testing.T) {
	key := newKey(t, keystore.Dev, keystore.Record{ID: "k_any", Role: "reader"})
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	respond "secret content"
	apikey {
		keys file %s
	}
}`, port, writeKeyFile(t, key.record)))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if r := send(t, "GET", url); r.status != 401 || strings.Contains(r.body, "secret content") {
		t.Fatalf("without a key: %d %q", r.status, r.body)
	}
	if r := send(t, "GET", url, bearer(key)...); r.status != 200 || r.body != "secret content" {
		t.Fatalf("with a key: %d %q", r.status, r.body)
	}
}

// TestValidate: settings that provision but make no sense fail the load.
func TestValidate(t *testing.T) {
	key := newKey(t, keystore.Dev, keystore.Record{ID: "k_v", Role: "reader"})
	keyFile := writeKeyFile(t, key.record)
	for name, c := range map[string]struct{ extra, want string }{
		"key_from twice":    {`"key_from": [{"header": "X-Api-Key"}, {"header": "x-api-key"}]`, "key_from[1]: header X-Api-Key is listed twice"},
		"allow_types twice": {`"allow_types": ["dev", "dev"]`, "allow_types: dev is listed twice"},
		"service spaces":    {`"service": "my service"`, `service: "my service" must be one word`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {
				"listen": ["127.0.0.1:%d"],
				"routes": [{"handle": [{"handler": "apikey", "keys": {"source": "file", "path": %q}, %s}]}]}}}}}`,
				freePort(t), keyFile, c.extra)
			err := caddy.Load([]byte(cfg), true)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load: %v, want %q", err, c.want)
			}
		})
	}
}
