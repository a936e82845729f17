package apikey

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// guardedSite is a gateway on one port with the given apikey settings on
// /api/*, in front of up, and Caddy's log at DEBUG in logPath. Request
// headers may be 64 KB (Caddy's default is 16 KB), so the tests can send
// headers longer than the gateway's own limits on what it reads.
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
