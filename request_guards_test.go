package apikey

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// guardedSite is a gateway on one port with the given apikey settings on
// /api/*, in front of up, and Caddy's log at DEBUG in logPath. Request
// headers may be 64 KB (Caddy's default is 16 KB), as on the servers where
// the issues were found.
func guardedSite(port int, logPath, keyFile, upstream, settings, siteExtra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %s
		level DEBUG
	}
	servers {
		max_header_size 64KB
	}
}
http://127.0.0.1:%d {
	%s
	handle_path /api/* {
		apikey {
			keys file %s
			%s
		}
		reverse_proxy %s
	}
}`, logPath, port, siteExtra, keyFile, settings, upstream)
}

// TestSecondKeyNeverReachesTheUpstream: a request that carries two keys in
// two key headers is admitted on the first, and the upstream sees neither.
func TestSecondKeyNeverReachesTheUpstream(t *testing.T) {
	writer := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_two_writer", Role: "writer"})
	reader := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_two_reader", Role: "reader"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, guardedSite(port, filepath.Join(t.TempDir(), "caddy.log"), gatewaytest.WriteKeyFile(t, writer.Record, reader.Record), up.Addr(), "", ""))
	url := fmt.Sprintf("http://127.0.0.1:%d/api/x", port)

	for name, hdrs := range map[string][]string{
		"bearer writer, header reader": {"Authorization", "Bearer " + writer.Secret, "X-API-Key", reader.Secret},
		"header writer, basic auth":    {"X-API-Key", writer.Secret, "Authorization", "Basic dXNlcjpwYXNz"},
	} {
		if r := gatewaytest.Send(t, "GET", url, hdrs...); r.Status != 200 {
			t.Fatalf("%s: %d", name, r.Status)
		}
		seen := up.Last(t)
		for _, h := range []string{"Authorization", "X-Api-Key"} {
			if v := seen.Header.Get(h); v != "" {
				t.Errorf("%s: the upstream got %s (%d bytes)", name, h, len(v))
			}
		}
	}
}

// TestMethodOverridesAreChecked: a reader's GET that asks to be run as
// DELETE, through any override header or _method, is refused (403 method)
// and never reaches the upstream; an override the role allows passes.
func TestMethodOverridesAreChecked(t *testing.T) {
	reader := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_override_reader", Role: "reader"})
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_override_writer", Role: "writer"})
	custom := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_override_custom", Role: "custom", Permissions: []string{"GET /x", "POST /chat"}})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, guardedSite(port, filepath.Join(t.TempDir(), "caddy.log"),
		gatewaytest.WriteKeyFile(t, reader.Record, writer.Record, custom.Record), up.Addr(), "", ""))
	base := fmt.Sprintf("http://127.0.0.1:%d/api", port)

	for _, c := range []struct {
		name    string
		key     gatewaytest.Key
		path    string
		headers []string
		status  int
	}{
		{"X-HTTP-Method-Override", reader, "/x", []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"X-Method-Override", reader, "/x", []string{"X-Method-Override", "delete"}, 403},
		{"X-HTTP-Method", reader, "/x", []string{"X-HTTP-Method", "PUT"}, 403},
		{"_method", reader, "/x?_method=DELETE", nil, 403},
		{"_method among others", reader, "/x?a=1&_method=patch", nil, 403},
		{"writer overrides to DELETE", writer, "/x", []string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"writer overrides to PUT", writer, "/x", []string{"X-HTTP-Method-Override", "PUT"}, 200},
		{"custom overrides to a permitted method", custom, "/chat?_method=POST", nil, 403}, // GET /chat itself is not permitted
		{"custom override to POST on /x", custom, "/x", []string{"X-HTTP-Method-Override", "POST"}, 403},
		{"_method escaped", reader, "/x?%5Fmethod=DELETE", nil, 403},
		{"_method escaped lowercase", reader, "/x?%5fmethod=delete", nil, 403},
		{"_method after a semicolon", reader, "/x?a=1;_method=DELETE", nil, 403},
		{"no override", reader, "/x", nil, 200},
	} {
		before := up.Count()
		r := gatewaytest.Send(t, "GET", base+c.path, append(c.key.Bearer(), c.headers...)...)
		if r.Status != c.status {
			t.Errorf("%s: %d, want %d", c.name, r.Status, c.status)
			continue
		}
		if c.status == 403 {
			if r.Err.Reason != reasonMethod {
				t.Errorf("%s: reason %q, want method", c.name, r.Err.Reason)
			}
			if up.Count() != before {
				t.Errorf("%s: the refused request reached the upstream", c.name)
			}
		}
	}

	// A form body's _method, as Rails and Laravel read it.
	for _, c := range []struct {
		name, contentType, body string
		status                  int
	}{
		{"urlencoded DELETE", "application/x-www-form-urlencoded", "a=1&_method=DELETE", 403},
		{"urlencoded escaped", "application/x-www-form-urlencoded", "a=1&%5Fmethod=delete", 403},
		{"urlencoded PUT", "application/x-www-form-urlencoded", "_method=PUT&a=1", 200},
		{"multipart", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", 403},
		{"multipart, name unquoted", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--XX--\r\n", 403},
		{"multipart, NAME in capitals", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; NAME=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", 403},
		{"urlencoded, a type list", "application/x-www-form-urlencoded, text/plain", "_method=DELETE", 403},
		{"urlencoded, charset twice", "application/x-www-form-urlencoded; charset=utf-8; charset=latin1", "_method=DELETE", 403},
		{"JSON, as Express's body getter and Laravel read it", "application/json", `{"_method": "DELETE"}`, 403},
		{"JSON asking for PUT", "application/json", `{"_method": "PUT"}`, 200},
	} {
		req, _ := http.NewRequest("POST", base+"/x", strings.NewReader(c.body))
		req.Header.Set("Content-Type", c.contentType)
		req.Header.Set("Authorization", "Bearer "+writer.Secret)
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("writer POST with %s: %d, want %d", c.name, resp.StatusCode, c.status)
		}
		if c.status == 200 {
			if seen := up.Last(t); seen.Method != "POST" {
				t.Errorf("%s: the upstream got %s", c.name, seen.Method)
			}
		}
	}
}

// TestPathPermissionsOnCanonicalPaths: a key limited to some paths is
// checked against the path the upstream gets, so a path with dot segments
// or encoded slashes (which Caddy's matcher cleans, and an upstream may
// not) is refused (403 path) rather than checked in its cleaned form.
func TestPathPermissionsOnCanonicalPaths(t *testing.T) {
	custom := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_paths", Role: "custom", Permissions: []string{"GET /h/api/*"}})
	admin := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_paths_admin", Role: "admin"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	handle /h/* {
		apikey {
			keys file %s
		}
		reverse_proxy %s
	}
}`, port, gatewaytest.WriteKeyFile(t, custom.Record, admin.Record), up.Addr()))
	for _, p := range []string{"/h/admin/..%2Fapi/x", "/h/admin/%2e%2e/api/x", "/h/admin%2F..%2Fapi/x", "/h/admin/../api/x", "/h/api/./x",
		"/h/api/x%5C..%5Cadmin", "/h/api/x%5c..%5cadmin", "/h/api/..;/admin"} {
		before := up.Count()
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d", port), nil)
		req.URL.Opaque = p // as sent, not cleaned by the client
		req.Header.Set("Authorization", "Bearer "+custom.Secret)
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || !strings.Contains(string(body), `"reason":"path"`) {
			t.Errorf("%s: %d %s, want 403 reason path", p, resp.StatusCode, body)
		}
		if up.Count() != before {
			t.Errorf("%s reached the upstream", p)
		}
	}
	if r := gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/h/api/x", port), custom.Bearer()...); r.Status != 200 {
		t.Errorf("the plain path: %d", r.Status)
	}
	// A key without path permissions is not held to it.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d", port), nil)
	req.URL.Opaque = "/h/a/..%2Fb"
	req.Header.Set("Authorization", "Bearer "+admin.Secret)
	if resp, err := gatewaytest.Client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("an admin key on an encoded path: %v", err)
	} else {
		resp.Body.Close()
	}
}

// TestNothingRidesInTrailersOrPreflights: request trailers never reach the
// upstream (a second key, a credential or an override could ride in one),
// and a preflight passed on carries no key, credential, cookie, override
// or body.
func TestNothingRidesInTrailersOrPreflights(t *testing.T) {
	writer := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_trailer_writer", Role: "writer", Services: []string{"n8n"}})
	reader := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_trailer_reader", Role: "reader", Services: []string{"n8n"}})
	type seen struct {
		method  string
		query   string
		header  http.Header
		trailer http.Header
		body    string
	}
	got := make(chan seen, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.RawQuery, r.Header.Clone(), r.Trailer.Clone(), string(body)}
	}))
	t.Cleanup(up.Close)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		service n8n
		upstream_auth gateway-n8n-credential
	}
	reverse_proxy %s
}`, port, gatewaytest.WriteKeyFile(t, writer.Record, reader.Record), strings.TrimPrefix(up.URL, "http://")))
	url := fmt.Sprintf("http://127.0.0.1:%d/api/v1/workflows", port)

	req, _ := http.NewRequest("POST", url, io.NopCloser(strings.NewReader("payload"))) // chunked
	req.Header.Set("Authorization", "Bearer "+writer.Secret)
	req.Trailer = http.Header{"X-Api-Key": {reader.Secret}, "X-N8n-Api-Key": {"client-chosen"}, "X-Http-Method-Override": {"DELETE"}}
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("chunked POST with trailers: %d", resp.StatusCode)
	}
	s := <-got
	if len(s.trailer) != 0 || s.body != "payload" || s.header.Get("X-N8n-Api-Key") != "gateway-n8n-credential" {
		t.Errorf("the upstream got trailers %v (want none), body %q", keysOf(s.trailer), s.body)
	}

	req, _ = http.NewRequest("OPTIONS", url+"?_method=DELETE", strings.NewReader("body"))
	for name, v := range map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
		"X-N8N-API-KEY": "attacker-guess", "X-HTTP-Method-Override": "DELETE", "Cookie": "session=1",
		"X-API-Key": reader.Secret} {
		req.Header.Set(name, v)
	}
	resp, err = gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s = <-got
	for _, h := range []string{"X-N8n-Api-Key", "X-Http-Method-Override", "Cookie", "X-Api-Key", "Authorization"} {
		if s.header.Get(h) != "" {
			t.Errorf("a passed preflight carried %s to the upstream", h)
		}
	}
	if s.method != "OPTIONS" || s.body != "" || s.query != "" || s.header.Get("Origin") == "" {
		t.Errorf("preflight: method %s, body %q, query %q, origin %q", s.method, s.body, s.query, s.header.Get("Origin"))
	}
}

func keysOf(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	return out
}

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

// TestErrorFormats: each route's refusals come in its error_format, and a
// daily-quota 429 says no retry will help soon while a burst 429 does not.
func TestErrorFormats(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_formats", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(1)})
	burst := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_formats_burst", Role: "reader", Services: []string{"*"}, Rate: "1/m"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record, burst.Record)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%[1]d {
	handle_path /default/* {
		apikey {
			keys file %[2]s
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
	handle_path /openai/* {
		apikey {
			keys file %[2]s
			service openai
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
	handle_path /ollama/* {
		apikey {
			keys file %[2]s
			service ollama
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
	handle_path /ollama-v1/* {
		apikey {
			keys file %[2]s
			service ollama
			error_format openai
			failed_auth_limit off
		}
		reverse_proxy %[3]s
	}
}`, port, keyFile, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	raw := func(method, path string, hdrs ...string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		for i := 0; i+1 < len(hdrs); i += 2 {
			req.Header.Set(hdrs[i], hdrs[i+1])
		}
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil && resp.StatusCode != 200 {
			t.Fatalf("%s: body is not JSON: %v", path, err)
		}
		return resp.StatusCode, resp.Header, body
	}

	// 401 in each format.
	_, _, body := raw("GET", "/default/x")
	if e, ok := body["error"].(map[string]any); !ok || e["code"] != "missing_key" || e["status"] != float64(401) || e["message"] == "" {
		t.Errorf("default: %v", body)
	}
	for _, path := range []string{"/openai/x", "/ollama-v1/x"} {
		_, _, body = raw("GET", path)
		e, ok := body["error"].(map[string]any)
		if !ok || e["code"] != "missing_key" || e["type"] != "authentication_error" || e["param"] != nil || !strings.HasPrefix(e["message"].(string), "No API key was sent") {
			t.Errorf("%s (openai): %v", path, body)
		}
	}
	_, _, body = raw("GET", "/ollama/x")
	if msg, ok := body["error"].(string); !ok || !strings.HasPrefix(msg, "No API key was sent") || body["code"] != "missing_key" {
		t.Errorf("ollama: %v", body)
	}
	// 403 with its reason.
	_, _, body = raw("POST", "/ollama/x", key.Bearer()...)
	if body["error"] != "The key's role or permissions do not allow this method on this path." || body["reason"] != "method" {
		t.Errorf("ollama 403: %v", body)
	}

	// The daily quota: one request passes, the next is final.
	if status, _, _ := raw("GET", "/openai/x", key.Bearer()...); status != 200 {
		t.Fatalf("first request: %d", status)
	}
	status, hdr, body := raw("GET", "/openai/x", key.Bearer()...)
	if status != 429 || hdr.Get("X-Should-Retry") != "false" || hdr.Get("Retry-After") == "" {
		t.Errorf("daily quota: %d, x-should-retry %q, retry-after %q", status, hdr.Get("X-Should-Retry"), hdr.Get("Retry-After"))
	}
	if e, _ := body["error"].(map[string]any); e["code"] != "quota_exceeded" || e["type"] != "rate_limit_error" {
		t.Errorf("daily quota body: %v", body)
	}
	// The burst rate: retrying helps, so no x-should-retry.
	raw("GET", "/openai/x", burst.Bearer()...)
	status, hdr, body = raw("GET", "/openai/x", burst.Bearer()...)
	if status != 429 || hdr.Get("X-Should-Retry") != "" || hdr.Get("Retry-After") == "" {
		t.Errorf("burst: %d, x-should-retry %q, retry-after %q", status, hdr.Get("X-Should-Retry"), hdr.Get("Retry-After"))
	}
	if e, _ := body["error"].(map[string]any); e["code"] != "rate_limited" || e["reason"] != "burst" {
		t.Errorf("burst body: %v", body)
	}
}

// TestPreflightsPass: browser preflights carry no credentials; they reach
// the next handler uncounted, so twenty of them do not lock an address out,
// and refusals carry the site's CORS headers.
func TestPreflightsPass(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_cors", Role: "reader"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%[1]d {
	header Access-Control-Allow-Origin https://app.example.com
	header Access-Control-Expose-Headers "RateLimit, RateLimit-Policy, Retry-After"
	@preflight method OPTIONS
	handle_path /api/* {
		apikey {
			keys file %[2]s
		}
		respond @preflight 204
		reverse_proxy %[3]s
	}
	handle_path /strict/* {
		apikey {
			keys file %[2]s
			preflight authenticate
			failed_auth_limit 100/m
		}
		respond @preflight 204
		reverse_proxy %[3]s
	}
}`, port, keyFile, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	preflight := []string{"Origin", "https://app.example.com", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization"}

	for i := range 25 {
		r := gatewaytest.Send(t, "OPTIONS", base+"/api/v1/chat", preflight...)
		if r.Status != 204 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Fatalf("preflight %d: %d, allow-origin %q", i, r.Status, r.Header.Get("Access-Control-Allow-Origin"))
		}
	}
	if r := gatewaytest.Send(t, "GET", base+"/api/v1/models", key.Bearer()...); r.Status != 200 {
		t.Fatalf("a valid key after 25 preflights: %d (locked out?)", r.Status)
	}
	if up.Count() != 1 {
		t.Errorf("the upstream saw %d requests, want 1 (preflights are answered by respond)", up.Count())
	}
	// An OPTIONS that is not a preflight is authenticated like any request.
	if r := gatewaytest.Send(t, "OPTIONS", base+"/api/v1/chat"); r.Status != 401 {
		t.Errorf("a bare OPTIONS: %d, want 401", r.Status)
	}
	// Refusals carry the site's CORS headers, so a browser app can read them.
	r := gatewaytest.Send(t, "GET", base+"/api/v1/models", "Origin", "https://app.example.com")
	if r.Status != 401 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Errorf("refusal: %d, allow-origin %q", r.Status, r.Header.Get("Access-Control-Allow-Origin"))
	}
	// preflight authenticate: a preflight is checked like any request.
	if r := gatewaytest.Send(t, "OPTIONS", base+"/strict/v1/chat", preflight...); r.Status != 401 {
		t.Errorf("preflight authenticate: %d, want 401", r.Status)
	}
}

// TestUpstreamSecretFromFile: upstream_auth … file <path> is read at load
// and watched; a rotated secret reaches the upstream within a second, with
// no reload, and a version that is empty keeps the last good one.
func TestUpstreamSecretFromFile(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_secret_file", Role: "reader", Services: []string{"*"}})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "n8n.secret")
	bearerSecret := filepath.Join(dir, "ollama.secret")
	os.WriteFile(secret, []byte("n8n-secret-one\n"), 0o600)
	os.WriteFile(bearerSecret, []byte("ollama-secret-one\n"), 0o600)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	logPath := filepath.Join(dir, "caddy.log")
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[5]s
	}
}
http://127.0.0.1:%[1]d {
	handle_path /n8n/* {
		apikey {
			keys file %[2]s
			service n8n
			upstream_auth file %[3]s
		}
		reverse_proxy %[6]s
	}
	handle_path /ollama/* {
		apikey {
			keys file %[2]s
			upstream_auth bearer file %[4]s
		}
		reverse_proxy %[6]s
	}
}`, port, keyFile, secret, bearerSecret, logPath, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	seen := func(path, header string) string {
		t.Helper()
		if r := gatewaytest.Send(t, "GET", base+path, key.Bearer()...); r.Status != 200 {
			t.Fatalf("%s: %d", path, r.Status)
		}
		return up.Last(t).Header.Get(header)
	}
	if got := seen("/n8n/x", "X-N8n-Api-Key"); got != "n8n-secret-one" {
		t.Fatalf("n8n got %q", got)
	}
	if got := seen("/ollama/x", "Authorization"); got != "Bearer ollama-secret-one" {
		t.Fatalf("ollama got %q", got)
	}

	// Rotate both, the way Kubernetes does: a new file renamed over.
	for path, value := range map[string]string{secret: "n8n-secret-two", bearerSecret: "ollama-secret-two"} {
		tmp := path + ".new"
		os.WriteFile(tmp, []byte(value+"\n"), 0o600)
		os.Rename(tmp, path)
	}
	rotated := time.Now()
	for seen("/n8n/x", "X-N8n-Api-Key") != "n8n-secret-two" || seen("/ollama/x", "Authorization") != "Bearer ollama-secret-two" {
		if time.Since(rotated) > 3*time.Second {
			t.Fatal("the rotated secret was not used within 3s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("rotated secret in use after %v", time.Since(rotated).Round(10*time.Millisecond))

	// An empty version is refused; the last good secret stays.
	os.WriteFile(secret, nil, 0o600)
	gatewaytest.WaitForLog(t, logPath, "upstream secret file cannot be used")
	if got := seen("/n8n/x", "X-N8n-Api-Key"); got != "n8n-secret-two" {
		t.Errorf("after an empty version: %q", got)
	}
	log, _ := os.ReadFile(logPath)
	for _, s := range []string{"n8n-secret-one", "n8n-secret-two", "ollama-secret-one", "ollama-secret-two"} {
		if strings.Contains(string(log), s) {
			t.Errorf("the log holds an upstream secret")
		}
	}
}

// TestThrottlePeriodsKeepTheirOwnWindows: a route with a per-second limit
// must not restart the window of a route with a per-minute limit.
func TestThrottlePeriodsKeepTheirOwnWindows(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_periods", Role: "reader"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%[1]d {
	handle_path /minute/* {
		apikey {
			keys file %[2]s
			failed_auth_limit 10/m
		}
		reverse_proxy %[3]s
	}
	handle_path /second/* {
		apikey {
			keys file %[2]s
			failed_auth_limit 1000/s
		}
		reverse_proxy %[3]s
	}
}`, port, keyFile, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := range 10 {
		if i == 5 {
			// Past the per-second window: a failure on /second would
			// have restarted a window shared by both routes.
			time.Sleep(1100 * time.Millisecond)
			gatewaytest.Send(t, "GET", base+"/second/x")
		}
		if r := gatewaytest.Send(t, "GET", base+"/minute/x"); r.Status != 401 {
			t.Fatalf("failure %d: %d", i+1, r.Status)
		}
	}
	if r := gatewaytest.Send(t, "GET", base+"/minute/x", key.Bearer()...); r.Status != 429 || r.Err.Code != decisionRateLimited {
		t.Errorf("after 10 failures in a minute: %d %s, want 429 rate_limited", r.Status, r.Err.Code)
	}
	if r := gatewaytest.Send(t, "GET", base+"/second/x", key.Bearer()...); r.Status != 200 {
		t.Errorf("the per-second route: %d, want 200", r.Status)
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

// adaptJSON adapts a Caddyfile into a JSON document a test can change.
func adaptJSON(t *testing.T, caddyfile string) map[string]any {
	t.Helper()
	cfg, err := gatewaytest.Adapt(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestKeyServiceSlotsPerAddress: with a key service that answers in 1.5 s,
// one address sending 300 concurrent made-up keys gets throttled instead of
// taking every call slot: a valid, uncached key from another address still
// gets 200, and the service sees at most the throttle limit plus the
// per-address cap in calls.
func TestKeyServiceSlotsPerAddress(t *testing.T) {
	valid := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_slots_valid", Role: "reader"})
	svc := newFakeKeyService(t, valid.Record)
	svc.delay = 1500 * time.Millisecond
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys http %s {
			timeout 5s
		}
		failed_auth_limit 20/m
	}
	reverse_proxy %s
}`, port, svc.URL, up.Addr()))
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)

	const wave, limit, perAddressCap = 300, 20, 8
	done := make(chan []int)
	go func() {
		done <- gatewaytest.Burst(wave, func(int) *http.Request {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("X-API-Key", gatewaytest.NewKey(t, keystore.Dev, keystore.Record{}).Secret)
			return req
		})
	}()
	time.Sleep(300 * time.Millisecond) // the wave is in flight
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+valid.Secret)
	resp, err := other.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("a valid key from another address during the wave: %d, want 200", resp.StatusCode)
	}
	codes := gatewaytest.Tally(<-done)
	if codes[503] != 0 || codes[-1] != 0 {
		t.Errorf("the wave got %v: no 503s or dropped connections expected", codes)
	}
	if codes[401] > perAddressCap || codes[401]+codes[429] != wave {
		t.Errorf("the wave got %v, want at most %d × 401 and the rest 429", codes, perAddressCap)
	}
	if calls := svc.calls.Load(); calls > limit+perAddressCap+1 {
		t.Errorf("the key service got %d calls, want at most %d (limit + cap) + 1 (the valid key)", calls, limit+perAddressCap)
	}
	t.Logf("wave: %v; key service calls: %d", codes, svc.calls.Load())
}

// TestUsageStaysBoundedUnderDistinctPaths: one valid key sending 20,000
// requests, each with a new 20 KB path segment, through the built Caddy,
// leaves its memory within 20 MB of where it was and its usage file under
// 1 MB, and /apikey/usage answers in pages. Under -short it sends 5,000
// (100 MB of distinct paths: kept, they would still pass the bound).
func TestUsageStaysBoundedUnderDistinctPaths(t *testing.T) {
	distinct := 20000
	if testing.Short() {
		distinct = 5000
	}
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_cardinality", Role: "reader", QuotaPerDay: int64p(1_000_000)})
	up := gatewaytest.NewUpstream(t)
	dir := t.TempDir()
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	usageFile := filepath.Join(dir, "usage.json")
	cmd := gatewaytest.StartProcess(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	servers {
		max_header_size 64KB
	}
}
http://127.0.0.1:%d {
	handle_path /ollama/* {
		apikey {
			keys file %s
			service ollama
			usage_file %s
			failed_auth_limit off
		}
		reverse_proxy %s
	}
}`, adminPort, port, gatewaytest.WriteKeyFile(t, func() keystore.Record { r := key.Record; r.Services = []string{"*"}; return r }()), usageFile, up.Addr()))

	segment := strings.Repeat("y", 20<<10)
	run := func(from, n int) {
		t.Helper()
		const workers = 4
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				for i := from + w; i < from+n; i += workers {
					req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/ollama/x%07d%s/b", port, i, segment), nil)
					req.Header.Set("Authorization", "Bearer "+key.Secret)
					resp, err := gatewaytest.Client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("request %d: %d", i, resp.StatusCode)
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	run(0, 2000) // warm up: buffers, pools and the heap reach their working size
	before := rssOf(t, cmd.Process.Pid)
	run(2000, distinct)
	after := rssOf(t, cmd.Process.Pid)
	t.Logf("RSS %d MB before, %d MB after %d distinct 20 KB paths", before>>20, after>>20, distinct)
	if after-before > 20<<20 {
		t.Errorf("RSS grew by %d MB, want under 20 MB", (after-before)>>20)
	}

	status, body := gatewaytest.Admin(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", adminPort), "/apikey/usage?key=k_cardinality&limit=50")
	var page struct {
		Rows []struct {
			Endpoint string `json:"endpoint"`
			Requests int64  `json:"requests"`
		} `json:"rows"`
		Next string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(body), &page); status != 200 || err != nil {
		t.Fatalf("usage: %d %v", status, err)
	}
	if len(page.Rows) == 0 || len(page.Rows) > 50 {
		t.Errorf("a page of %d rows, want 1 to 50", len(page.Rows))
	}
	var total int64
	for _, r := range page.Rows {
		total += r.Requests
		if len(r.Endpoint) > 100 {
			t.Errorf("an endpoint of %d bytes is counted", len(r.Endpoint))
		}
	}
	// The long segments all count as ":id": one counter, every request in it.
	if total != int64(2000+distinct) || page.Next != "" {
		t.Errorf("usage counts %d requests in %d rows (more pages: %v), want %d in one page", total, len(page.Rows), page.Next != "", 2000+distinct)
	}

	// A clean stop saves the usage file.
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	info, err := os.Stat(usageFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() > 1<<20 {
		t.Errorf("usage file is %d KB, want under 1 MB", info.Size()>>10)
	}
}

// rssOf reads a process's resident memory from /proc.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc to read memory from: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestProvisionWarnings: a server whose access log (and error log) would
// write a key header in full, and one whose trusted proxies are not strict,
// are warned about once when the config loads, naming what to add.
func TestProvisionWarnings(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_warn", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	for _, c := range []struct {
		name, global, site string
		want, notWant      []string
	}{
		{"access log, default key headers", "", "log", []string{"access log writes request headers", "error log writes request headers"}, []string{"trusted_proxies_strict"}},
		{"access log, Authorization only", "", "log\n\tkey_from_note", nil, []string{"format filter", "trusted_proxies_strict"}},
		{"loose trusted proxies", "servers {\n\t\ttrusted_proxies static private_ranges\n\t}", "", []string{"set trusted_proxies_strict"}, []string{"access log writes"}},
		{"strict trusted proxies", "servers {\n\t\ttrusted_proxies static private_ranges\n\t\ttrusted_proxies_strict\n\t}", "", nil, []string{"trusted_proxies_strict"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			keyFrom := ""
			site := c.site
			if strings.Contains(site, "key_from_note") {
				site, keyFrom = "log", "key_from header Authorization Bearer"
			}
			gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
	}
	%[2]s
}
http://127.0.0.1:%[3]d {
	%[4]s
	handle /a/* {
		apikey {
			keys file %[5]s
			%[6]s
		}
		respond ok
	}
	handle /b/* {
		apikey {
			keys file %[5]s
			%[6]s
		}
		respond ok
	}
}`, logPath, c.global, gatewaytest.Port(t), site, keyFile, keyFrom))
			gatewaytest.Stop()
			data, _ := os.ReadFile(logPath)
			log := string(data)
			for _, w := range c.want {
				if n := strings.Count(log, w); n != 1 {
					t.Errorf("%q in %d warnings, want 1:\n%s", w, n, log)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(log, w) {
					t.Errorf("an unwarranted warning names %q", w)
				}
			}
		})
	}
}

// TestMethodOverrideLateInABody: a "_method" past the first 64 KiB of a
// form body, which frameworks still read, fails the request: the upstream
// never gets the whole body, so it never acts on it.
func TestMethodOverrideLateInABody(t *testing.T) {
	writer := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_late_writer", Role: "writer"})
	var complete atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "cut body", http.StatusBadRequest)
			return
		}
		complete.Add(1)
	}))
	t.Cleanup(up.Close)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, guardedSite(port, filepath.Join(t.TempDir(), "caddy.log"), gatewaytest.WriteKeyFile(t, writer.Record),
		strings.TrimPrefix(up.URL, "http://"), "", ""))
	post := func(body string) int {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/x", port), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+writer.Secret)
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	padding := "a=" + strings.Repeat("x", 70<<10)
	if code := post(padding + "&b=1"); code != 200 || complete.Load() != 1 {
		t.Fatalf("a large form without _method: %d, %d complete", code, complete.Load())
	}
	if code := post(padding + "&_method=DELETE"); code == 200 || complete.Load() != 1 {
		t.Errorf("a _method past 64 KiB: %d, and the upstream got %d whole bodies (want 1)", code, complete.Load())
	}
}
