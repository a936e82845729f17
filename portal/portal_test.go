package portal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// The demo users of examples/portal/Caddyfile (public, for tests and the
// demo only) and their bcrypt hashes.
var portalUsers = map[string]string{
	"alice": "$2a$10$1w7hdapy8e7ppv6NABzQGO8hRidKmqR.ygWcU0L2Xrix3S7iJjQEq",
	"bob":   "$2a$10$GAXTmn/l6eBNNioN.gaPUOvHMPEFwY/spC6W3.eMpYZHhLFbxZkQe",
	"admin": "$2a$10$muO8kO3/tI1jYKcXLraxzubOuMrjG8MSJBMvo2lOp2/tBuaNyOihm",
}

// portalSite starts a Caddy with a gateway route and the portal behind
// basic_auth, on a key file and audit log in a temporary folder, and
// returns the base URL, the key file and the audit log.
func portalSite(t *testing.T, policy string) (base, keys, auditLog string) {
	t.Helper()
	dir := t.TempDir()
	keys = filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	base, auditLog = portalSiteOn(t, "keys file "+keys, "", "", policy)
	return base, keys, auditLog
}

// portalSiteOn is portalSite with the key store (a keys line) and global
// options of the caller's choice.
func portalSiteOn(t *testing.T, keys, gateway, global, policy string) (base, auditLog string) {
	t.Helper()
	auditLog = filepath.Join(t.TempDir(), "audit.log")
	port := gatewaytest.Port(t)
	var users strings.Builder
	for name, hash := range portalUsers {
		fmt.Fprintf(&users, "\t\t\t%s %s\n", name, hash)
	}
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
%[6]s
}
http://127.0.0.1:%[1]d {
	handle /portal/* {
		basic_auth {
%[2]s		}
		apikey_portal {
			%[3]s
			service echo /echo/hello
			service other /other/x
			admins admin
			audit_log %[4]s
%[5]s
		}
	}
	handle /open/* {
		apikey_portal {
			%[3]s
			base_path /open
			service echo /echo/hello
		}
	}
	handle /echo/* {
		apikey {
			%[3]s
			service echo
			audit_log %[4]s
			%[7]s
		}
		respond "echo {http.apikey.id}"
	}
}
`, port, users.String(), keys, auditLog, policy, global, gateway))
	return fmt.Sprintf("http://127.0.0.1:%d", port), auditLog
}

// visitor is one signed-in browser: basic auth and a cookie jar.
type visitor struct {
	t          *testing.T
	base, user string
	client     *http.Client
}

func newVisitor(t *testing.T, base, user string) *visitor {
	jar, _ := cookiejar.New(nil)
	return &visitor{t: t, base: base, user: user, client: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (v *visitor) do(method, path string, body io.Reader, header ...string) (int, http.Header, string) {
	v.t.Helper()
	req, err := http.NewRequest(method, v.base+path, body)
	if err != nil {
		v.t.Fatal(err)
	}
	req.SetBasicAuth(v.user, v.user+"-demo")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := v.client.Do(req)
	if err != nil {
		v.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}

func (v *visitor) get(path string) (int, string) {
	v.t.Helper()
	status, _, body := v.do(http.MethodGet, path, nil)
	return status, body
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// post sends a form as the portal's own pages do: with the token of the
// visitor's session and the portal's origin.
func (v *visitor) post(path string, form url.Values, header ...string) (int, string) {
	v.t.Helper()
	status, _, body := v.postFull(path, form, header...)
	return status, body
}

// postFull is post, with the answer's header.
func (v *visitor) postFull(path string, form url.Values, header ...string) (int, http.Header, string) {
	v.t.Helper()
	_, page := v.get("/portal/keys/new")
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		v.t.Fatal("no csrf token on the create page")
	}
	form.Set("csrf", m[1])
	return v.do(http.MethodPost, path, strings.NewReader(form.Encode()), append([]string{"Origin", v.base}, header...)...)
}

var shownKey = regexp.MustCompile(`id="secret"[^>]*>((?:DEV|PROD)_API_[A-Za-z0-9]+)</textarea>`)
var keyIDInPage = regexp.MustCompile(`Key <code>(k_[a-z0-9]+)</code>`)

// shown sends a form that makes a secret (create, rotate) and follows its
// redirect to the page that shows the secret once, as a browser does.
func (v *visitor) shown(path string, form url.Values) (int, string) {
	v.t.Helper()
	status, header, body := v.postFull(path, form)
	if status != http.StatusSeeOther {
		return status, body
	}
	return v.get(strings.TrimPrefix(header.Get("Location"), v.base))
}

// create makes a key through the portal and returns its id and secret.
func (v *visitor) create(form url.Values) (id, secret string) {
	v.t.Helper()
	status, body := v.shown("/portal/keys", form)
	m, idm := shownKey.FindStringSubmatch(body), keyIDInPage.FindStringSubmatch(body)
	if status != http.StatusOK || m == nil || idm == nil {
		v.t.Fatalf("creating a key: %d, and no key shown; page: %.400s", status, errorText(body))
	}
	return idm[1], m[1]
}

var alertText = regexp.MustCompile(`(?s)role="alert"[^>]*>(.*?)</p>`)

// errorText is the alert of a page, for failure messages (never a key: a
// page that shows one has no alert).
func errorText(body string) string {
	if m := alertText.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return "(no alert)"
}

func devForm(extra ...string) url.Values {
	f := url.Values{"name": {"test"}, "type": {"dev"}, "role": {"reader"}, "services": {"echo"}}
	for i := 0; i+1 < len(extra); i += 2 {
		f[extra[i]] = strings.Split(extra[i+1], "|")
	}
	return f
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestPortalEnforcesPolicyOnTheServer sends crafted forms, as a developer
// could with curl, asking for more than the policy allows: each is refused
// with a message naming the field, and the key file is unchanged.
func TestPortalEnforcesPolicyOnTheServer(t *testing.T) {
	base, keys, _ := portalSite(t, "\t\t\tmax_role writer\n\t\t\tmax_keys 2\n\t\t\ttypes dev\n\t\t\texpiry 30d")
	alice := newVisitor(t, base, "alice")
	before := readFile(t, keys)
	for _, c := range []struct {
		name  string
		form  url.Values
		field string
	}{
		{"a role above max_role", devForm("role", "admin"), "role"},
		{"a service outside the list", devForm("services", "echo|billing"), "services"},
		{"no service", devForm("services", ""), "services"},
		{"a type not allowed", devForm("type", "prod"), "type"},
		{"permissions without custom_permissions", devForm("permissions", "GET /echo/*"), "permissions"},
		{"a bad IP range", devForm("allowed_ips", "10.0.0.0/99"), "allowed_ips"},
		{"an expiry past the policy", devForm("expiry_days", "31"), "expiry"},
		{"a key as the name", devForm("name", "DEV_API_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := alice.post("/portal/keys", c.form)
			if status != http.StatusBadRequest || !strings.Contains(errorText(body), "<strong>"+c.field+":</strong>") {
				t.Fatalf("got %d %q, want 400 naming %s", status, errorText(body), c.field)
			}
			if shownKey.MatchString(body) {
				t.Fatal("a refused form showed a key")
			}
			if !bytes.Equal(readFile(t, keys), before) {
				t.Fatal("a refused form changed the key file")
			}
		})
	}

	// max_keys 2: the third working key is refused; revoking one frees a place.
	id1, _ := alice.create(devForm())
	alice.create(devForm())
	two := readFile(t, keys)
	if status, body := alice.post("/portal/keys", devForm()); status != http.StatusForbidden || !strings.Contains(errorText(body), "2 working keys") {
		t.Fatalf("a third key: %d %q, want 403 saying 2 working keys", status, errorText(body))
	}
	if !bytes.Equal(readFile(t, keys), two) {
		t.Fatal("the refused third key changed the key file")
	}
	if status, _ := alice.post("/portal/keys/"+id1+"/revoke", url.Values{}); status != http.StatusOK {
		t.Fatalf("revoking %s: %d", id1, status)
	}
	id3, _ := alice.create(devForm())

	// Editing is held to the policy too.
	three := readFile(t, keys)
	for _, form := range []url.Values{devForm("role", "admin"), devForm("services", "billing"), devForm("allowed_ips", "bogus")} {
		if status, body := alice.post("/portal/keys/"+id3, form); status != http.StatusBadRequest {
			t.Errorf("editing %s to %v: %d %q, want 400", id3, form, status, errorText(body))
		}
	}
	if status, _ := alice.post("/portal/keys/"+id1, devForm("role", "writer")); status != http.StatusConflict {
		t.Errorf("editing the revoked key %s: %d, want 409", id1, status)
	}
	if !bytes.Equal(readFile(t, keys), three) {
		t.Fatal("a refused edit changed the key file")
	}
	if status, _ := alice.post("/portal/keys/"+id3, devForm("role", "writer", "allowed_ips", "127.0.0.1, 10.0.0.0/8")); status != http.StatusSeeOther {
		t.Fatalf("a valid edit of %s: %d", id3, status)
	}
	rec, err := keystoreGet(keys, id3)
	if err != nil || rec.Role != "writer" || strings.Join(rec.AllowedIPs, " ") != "127.0.0.1 10.0.0.0/8" || rec.Owner != "alice" {
		t.Fatalf("after the edit %s is %+v (%v)", id3, rec.Role, err)
	}
}

func keystoreGet(path, id string) (keystore.Record, error) {
	return keyfile.NewStore(path).Get(context.Background(), id)
}

// TestPortalKeepsDevelopersApart: a developer cannot see, change, rotate,
// revoke or read the usage of another developer's key by guessing its id
// in URLs and forms; the key file stays unchanged and the key keeps working.
func TestPortalKeepsDevelopersApart(t *testing.T) {
	base, keys, _ := portalSite(t, "")
	alice, bob := newVisitor(t, base, "alice"), newVisitor(t, base, "bob")
	id, secret := alice.create(devForm())
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+secret); r.Status != 200 {
		t.Fatalf("alice's new key %s: %d", id, r.Status)
	}
	before := readFile(t, keys)

	if _, body := bob.get("/portal/keys"); strings.Contains(body, id) {
		t.Errorf("bob's key list shows alice's key %s", id)
	}
	if status, body := bob.get("/portal/keys/" + id); status != http.StatusNotFound || strings.Contains(body, "Edit permissions") {
		t.Errorf("bob opening alice's key %s: %d, want 404 without its forms", id, status)
	}
	if status, _ := bob.get("/portal/keys/" + id + "/revoke"); status != http.StatusNotFound {
		t.Errorf("bob's revoke confirmation for %s: %d, want 404", id, status)
	}
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/portal/keys/" + id, devForm("role", "writer")},
		{"/portal/keys/" + id + "/rotate", url.Values{}},
		{"/portal/keys/" + id + "/revoke", url.Values{}},
		{"/portal/admin/keys/" + id + "/approve", url.Values{}},
	} {
		status, body := bob.post(c.path, c.form)
		if status != http.StatusNotFound && status != http.StatusForbidden {
			t.Errorf("bob POST %s: %d, want 404 or 403", strings.ReplaceAll(c.path, id, "<alice's id>"), status)
		}
		if shownKey.MatchString(body) {
			t.Errorf("bob POST %s showed a key", c.path)
		}
	}
	if _, body := bob.get("/portal/usage?key=" + id); strings.Contains(body, "<code>"+id+"</code>") {
		t.Error("bob's usage page shows alice's key")
	}
	if !bytes.Equal(readFile(t, keys), before) {
		t.Fatal("bob's requests changed the key file")
	}
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+secret); r.Status != 200 {
		t.Fatalf("alice's key %s after bob's attempts: %d", id, r.Status)
	}
	// The admin sees and may revoke it.
	admin := newVisitor(t, base, "admin")
	if _, body := admin.get("/portal/admin"); !strings.Contains(body, id) {
		t.Errorf("the admin page does not list %s", id)
	}
	if status, _ := admin.post("/portal/keys/"+id+"/revoke", url.Values{}); status != http.StatusOK {
		t.Fatalf("the admin revoking %s: %d", id, status)
	}
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+secret); r.Status != 401 || r.Err.Code != "revoked_key" {
		t.Fatalf("%s after the admin revoked it: %d %s", id, r.Status, r.Err.Code)
	}
}

// TestPortalRefusesForgedChanges: a change without the session's token,
// with another token, or from another site's page is refused, and changes
// nothing.
func TestPortalRefusesForgedChanges(t *testing.T) {
	base, keys, _ := portalSite(t, "")
	alice := newVisitor(t, base, "alice")
	alice.get("/portal/keys") // a session cookie
	before := readFile(t, keys)
	form := devForm()
	for _, c := range []struct {
		name   string
		token  string
		header []string
	}{
		{"no token", "", nil},
		{"a made-up token", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", nil},
		{"another site's origin", "session", []string{"Origin", "http://evil.example"}},
		{"a cross-site fetch", "session", []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			if c.token == "session" {
				_, page := alice.get("/portal/keys/new")
				c.token = csrfInput.FindStringSubmatch(page)[1]
			}
			f.Set("csrf", c.token)
			status, _, body := alice.do(http.MethodPost, "/portal/keys", strings.NewReader(f.Encode()), c.header...)
			if status != http.StatusForbidden || shownKey.MatchString(body) {
				t.Fatalf("got %d, want 403 and no key", status)
			}
			if !bytes.Equal(readFile(t, keys), before) {
				t.Fatal("the forged change reached the key file")
			}
		})
	}
}

// TestPortalPagesAndAudit: every page has the strict headers; the key is on
// its one page only; every change is audited with the developer as actor,
// and never with a key or a hash.
func TestPortalPagesAndAudit(t *testing.T) {
	base, _, auditLog := portalSite(t, "\t\t\tapprove_prod")
	alice := newVisitor(t, base, "alice")
	id, secret := alice.create(devForm())
	for _, path := range []string{"/portal/keys", "/portal/keys/new", "/portal/keys/" + id, "/portal/usage", "/portal/playground", "/portal/keys/" + id + "/revoke"} {
		status, h, body := alice.do(http.MethodGet, path, nil)
		if status != http.StatusOK {
			t.Errorf("GET %s: %d", path, status)
		}
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: X-Frame-Options %q, Cache-Control %q", path, h.Get("X-Frame-Options"), h.Get("Cache-Control"))
		}
		if strings.Contains(body, secret) {
			t.Errorf("GET %s shows key %s's secret again", path, id)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, " onclick=") {
			t.Errorf("GET %s has inline script or style, which the CSP blocks", path)
		}
	}
	// A name with markup is shown as text.
	xid, _ := alice.create(devForm("name", `<img src=x onerror=alert(1)>`))
	if _, body := alice.get("/portal/keys/" + xid); strings.Contains(body, "<img src=x") || !strings.Contains(body, "&lt;img src=x") {
		t.Error("a key's name is not escaped on its page")
	}

	// A production key waits for approval: the gateway refuses it until
	// the admin approves; a developer cannot approve.
	pid, psecret := alice.create(devForm("type", "prod"))
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+psecret); r.Status != 403 || r.Err.Reason != "pending_approval" {
		t.Fatalf("pending key %s: %d %q, want 403 pending_approval", pid, r.Status, r.Err.Reason)
	}
	if status, _ := alice.post("/portal/admin/keys/"+pid+"/approve", url.Values{}); status != http.StatusForbidden {
		t.Fatalf("alice approving her own key: %d, want 403", status)
	}
	admin := newVisitor(t, base, "admin")
	if _, body := admin.get("/portal/admin"); !strings.Contains(body, "Approve key "+pid) {
		t.Fatalf("the admin page does not offer to approve %s", pid)
	}
	if status, _ := admin.post("/portal/admin/keys/"+pid+"/approve", url.Values{}); status != http.StatusSeeOther {
		t.Fatalf("approving %s: %d", pid, status)
	}
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+psecret); r.Status != 200 {
		t.Fatalf("approved key %s: %d", pid, r.Status)
	}
	if status, body := alice.shown("/portal/keys/"+id+"/rotate", url.Values{}); status != http.StatusOK || !shownKey.MatchString(body) {
		t.Fatalf("rotating %s: %d", id, status)
	}

	// The audit log: created, approved, rotated, each with its actor, never
	// a key or a hash. The writer is asynchronous for refusals; the
	// portal's changes are written before the answer.
	data := string(readFile(t, auditLog))
	for _, want := range []string{
		`"event":"key.created"`, `"actor":"portal:alice"`, `"event":"key.approved"`, `"actor":"portal:admin"`, `"event":"key.rotated"`,
	} {
		if !strings.Contains(data, want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	if strings.Contains(data, "DEV_API_") || strings.Contains(data, "PROD_API_") || strings.Contains(data, keystore.Sum(secret).Hex()) {
		t.Error("the audit log holds a key or a hash")
	}
	// Admins see the trail.
	if _, body := admin.get("/portal/admin"); !strings.Contains(body, "key.approved") {
		t.Error("the admin page does not show the recent audit entries")
	}
}

// TestPortalNeedsAnIdentity: without authentication in front, the portal
// serves no page but says what is missing.
func TestPortalNeedsAnIdentity(t *testing.T) {
	base, _, _ := portalSite(t, "")
	r := gatewaytest.Send(t, "GET", base+"/open/keys")
	if r.Status != http.StatusUnauthorized || !strings.Contains(r.Body, "Sign in first") {
		t.Fatalf("got %d %.200q, want 401 saying to sign in", r.Status, r.Body)
	}
	if r := gatewaytest.Send(t, "GET", base+"/open/assets/portal.css"); r.Status != 200 {
		t.Fatalf("the stylesheet: %d", r.Status)
	}
}

// TestPortalCaddyfileErrors: config mistakes name what is wrong.
func TestPortalCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ block, want string }{
		{"service echo /e", "keys is required"},
		{"keys file /tmp/k.json", "at least one service"},
		{"keys http http://127.0.0.1:1\n service echo /e", "cannot be changed"},
		{"keys file /tmp/k.json\n service echo /e\n max_keys 0", "max_keys"},
		{"keys file /tmp/k.json\n service echo /e\n expiry soon", "expiry"},
		{"keys file /tmp/k.json\n service echo /e\n colour blue", `unrecognized apikey_portal subdirective "colour"`},
		{"keys file /tmp/k.json\n service echo /e\n max_rate fast", "max_rate"},
		{"keys file /tmp/k.json\n service echo /e\n max_rate 10/d", `unit "d"`},
		{"keys file /tmp/k.json\n service echo /e\n max_quota_per_day -5", `max_quota_per_day "-5" is not a positive whole number`},
		{"keys file /tmp/k.json\n service echo /e\n max_tokens_per_day lots", `max_tokens_per_day "lots"`},
		{"keys file /tmp/k.json\n service echo /e\n max_tokens_per_minute", "wrong argument count"},
		{"keys file /tmp/k.json\n service echo /e\n models", "models: name the models"},
		{"keys file /tmp/k.json\n service echo /e {\n colour blue\n }", `service echo: unrecognized option "colour"`},
		{"keys file /tmp/k.json\n service echo /e {\n description\n }", `service echo: want description`},
		{"keys file /tmp/k.json\n service echo /e\n team ml", "team: want team <name> <member>"},
		{"keys file /tmp/k.json\n service echo /e\n team \"m l\" alice", `team "m l"`},
		{"keys file /tmp/k.json\n service echo /e\n team ml alice\n team ml bob", "team ml is defined twice"},
		{"keys file /tmp/k.json\n service echo /e\n groups", "groups: want groups <placeholder>"},
		{"keys file /tmp/k.json\n service echo /e\n groups {a} {b}", "groups: want groups <placeholder>"},
		{"keys file /tmp/k.json\n service echo /e\n team_groups", "team_groups: name the groups"},
		{"keys file /tmp/k.json\n service echo /e\n team_groups ok a,b", `team_groups "a,b"`},
	} {
		_, err := gatewaytest.Adapt(fmt.Sprintf("http://127.0.0.1:1 {\n apikey_portal {\n %s\n }\n}\n", c.block))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: got %v, want an error naming the line and saying %q", c.block, err, c.want)
		}
	}
	// Policy errors found at provision name the option.
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	os.WriteFile(keys, []byte(`{"keys": []}`), 0o600)
	for _, c := range []struct{ block, want string }{
		{"max_role custom", "max_role"},
		{"types staging", "types"},
		{"playground_url ftp://x", "playground_url"},
		{"service echo relative/path", "must start with /"},
		{"models [abc]", "models"},
		{"logout_url javascript:alert(1)", "logout_url"},
		{"service docs /d {\n docs javascript:alert(1)\n }", "service docs: docs"},
	} {
		err := gatewaytest.Load(fmt.Sprintf("{\n admin off\n}\nhttp://127.0.0.1:%d {\n apikey_portal {\n keys file %s\n service ok /ok\n %s\n }\n}\n", gatewaytest.Port(t), keys, c.block))
		gatewaytest.Stop()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error naming %s", c.block, err, c.want)
		}
	}
}

// TestPortalBehindForwardAuth runs the README's production shape: an
// identity provider asked by forward_auth, which answers with the user in a
// header that the portal's user option names. A client cannot forge that
// header: forward_auth removes the client's copy first.
func TestPortalBehindForwardAuth(t *testing.T) {
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The provider knows a session cookie; anything else is signed out.
		if c, err := r.Cookie("session"); err == nil && c.Value == "carol-session" {
			w.Header().Set("X-Auth-Request-Email", "carol@example.com")
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer idp.Close()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	os.WriteFile(keys, []byte(`{"keys": []}`), 0o600)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	handle /portal/* {
		forward_auth %s {
			uri /oauth2/auth
			copy_headers X-Auth-Request-Email
		}
		apikey_portal {
			user {http.request.header.X-Auth-Request-Email}
			keys file %s
			service echo /echo/hello
		}
	}
}
`, port, strings.TrimPrefix(idp.URL, "http://"), keys))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if r := gatewaytest.Send(t, "GET", base+"/portal/keys", "Cookie", "session=carol-session"); r.Status != 200 || !strings.Contains(r.Body, "Signed in as <strong>carol@example.com</strong>") {
		t.Fatalf("signed in: %d, want the page for carol@example.com", r.Status)
	}
	if r := gatewaytest.Send(t, "GET", base+"/portal/keys", "X-Auth-Request-Email", "carol@example.com"); r.Status != http.StatusUnauthorized || strings.Contains(r.Body, "carol@") {
		t.Fatalf("a forged identity header: %d, want 401 from forward_auth", r.Status)
	}
}

// TestPortalOnRedis: the portal on keys redis, with counters and usage on
// Redis: a key made in the portal works at the gateway, its use shows in the
// portal's usage (the cluster's sums) and today's quota, another developer
// cannot see it, and a revocation is refused from the next request.
func TestPortalOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	// A generous timeout: the counts are what this test reads, and a call
	// past the default 50ms on a loaded machine would count locally.
	global := fmt.Sprintf("\tapikey {\n\t\tredis {\n\t\t\taddress %s\n\t\t\ttimeout 2s\n\t\t}\n\t}", srv.Addr())
	base, _ := portalSiteOn(t, "keys redis", "counters redis", global, "")
	alice, bob := newVisitor(t, base, "alice"), newVisitor(t, base, "bob")
	id, secret := alice.create(devForm())
	for range 3 {
		if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+secret); r.Status != 200 {
			t.Fatalf("the portal's key %s at the gateway: %d", id, r.Status)
		}
	}
	_, page := alice.get("/portal/usage?key=" + id)
	if !regexp.MustCompile(`<code>` + id + `</code></td><td data-label="Service">echo</td><td data-label="Method">GET</td><td data-label="Endpoint"><code>/echo/hello</code></td><td data-label="Requests" class="num">3</td>`).MatchString(page) {
		t.Errorf("the usage page does not show 3 GET /echo/hello for %s", id)
	}
	if !strings.Contains(page, `data-label="Used" class="num">3</td><td data-label="Limit" class="num">5000</td>`) {
		t.Errorf("the usage page does not show 3 of 5000 used today for %s", id)
	}
	if _, body := bob.get("/portal/keys"); strings.Contains(body, id) {
		t.Errorf("bob sees alice's key %s", id)
	}
	if status, _ := bob.get("/portal/keys/" + id); status != http.StatusNotFound {
		t.Errorf("bob opening %s: %d", id, status)
	}
	if status, _ := alice.post("/portal/keys/"+id+"/revoke", url.Values{}); status != http.StatusOK {
		t.Fatalf("revoking %s: %d", id, status)
	}
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+secret); r.Status != 401 || r.Err.Code != "revoked_key" {
		t.Fatalf("%s after revocation: %d %s", id, r.Status, r.Err.Code)
	}
}

// TestPortalKeepsItsPolicy: expiry, max_keys, field checks, approvals and revocation hold against a developer who tries to get around them.
func TestPortalKeepsItsPolicy(t *testing.T) {
	base, keys, _ := portalSite(t, "\t\t\tapprove_prod\n\t\t\tmax_keys 3\n\t\t\tcustom_permissions")
	alice, admin := newVisitor(t, base, "alice"), newVisitor(t, base, "admin")
	store := keyfile.NewStore(keys)
	ctx := context.Background()

	// An operator's admin key, 12 hours long, given to alice; an expired
	// key of hers; and 1,200 revoked ones whose ids sort first.
	op := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_operator", Type: "dev", Role: "admin", Services: []string{"*"}, Owner: "alice",
		ExpiresAt: time.Now().Add(12 * time.Hour).UTC().Format(time.RFC3339)})
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_expired", Type: "dev", Role: "reader", Services: []string{"echo"}, Owner: "alice",
		ExpiresAt: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)})
	records := []keystore.Record{op.Record, old.Record}
	for i := range 1200 {
		records = append(records, gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: fmt.Sprintf("k_0old%04d", i), Type: "dev", Role: "reader",
			Owner: "alice", Revoked: true, CreatedAt: "2020-01-01T00:00:00Z"}).Record)
	}
	data, _ := json.Marshal(map[string]any{"keys": records})
	if err := os.WriteFile(keys, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if status, _ := alice.shown("/portal/keys/k_operator/rotate", url.Values{}); status != http.StatusOK {
		t.Fatalf("rotating k_operator: %d", status)
	}
	if rec, _ := store.Get(ctx, "k_operator"); rec.ExpiresAt != op.Record.ExpiresAt {
		t.Errorf("rotation moved the operator's expiry from %s to %s", op.Record.ExpiresAt, rec.ExpiresAt)
	}

	// An expired key cannot be brought back by rotating it.
	if status, body := alice.post("/portal/keys/k_expired/rotate", url.Values{}); status != http.StatusConflict || shownKey.MatchString(body) {
		t.Errorf("rotating an expired key: %d, want 409 and no key", status)
	}

	// Revoked records, however many, do not hide working keys from max_keys.
	id1, _ := alice.create(devForm()) // working: k_operator, and this one
	id2, _ := alice.create(devForm())
	if status, body := alice.post("/portal/keys", devForm()); status != http.StatusForbidden {
		t.Fatalf("a fourth working key past max_keys 3 behind 1,200 revoked records: %d %q", status, errorText(body))
	}

	// Names and permissions with control characters, or that the record
	// format refuses, are refused naming the field.
	for _, c := range []struct {
		form  url.Values
		field string
	}{
		{devForm("name", "a\x1b[31mred"), "name"},
		{devForm("name", "a\u202eb"), "name"},
		{devForm("role", "custom", "permissions", "GET /echo/* DELETE"), "permissions"},
		{devForm("role", "reader", "permissions", "POST /echo/*"), "permissions"},
	} {
		if status, body := alice.post("/portal/keys/k_operator", c.form); status != http.StatusBadRequest || !strings.Contains(errorText(body), c.field) {
			t.Errorf("%v: %d %q, want 400 naming %s", c.form, status, errorText(body), c.field)
		}
	}

	// A production key cannot be changed while it waits, and its later
	// changes need approval again.
	for _, id := range []string{id1, id2} {
		if status, _ := alice.post("/portal/keys/"+id+"/revoke", url.Values{}); status != http.StatusOK {
			t.Fatalf("revoking %s: %d", id, status)
		}
	}
	pid, psecret := alice.create(devForm("type", "prod"))
	if status, _ := alice.post("/portal/keys/"+pid, devForm("role", "writer", "services", "echo|other")); status != http.StatusConflict {
		t.Errorf("editing a pending key: %d, want 409", status)
	}
	admin.post("/portal/admin/keys/"+pid+"/approve", url.Values{})
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+psecret); r.Status != 200 {
		t.Fatalf("approved %s: %d", pid, r.Status)
	}
	if status, _ := alice.post("/portal/keys/"+pid, devForm("role", "writer")); status != http.StatusSeeOther {
		t.Fatalf("editing approved %s: %d", pid, status)
	}
	// The wider role waits for approval; the key keeps working as it was.
	if r := gatewaytest.Send(t, "GET", base+"/echo/hello", "Authorization", "Bearer "+psecret); r.Status != 200 {
		t.Errorf("%s after a wider role was asked for: GET %d %q, want 200 (it keeps what it had)", pid, r.Status, r.Err.Reason)
	}
	if r := gatewaytest.Send(t, "POST", base+"/echo/hello", "Authorization", "Bearer "+psecret); r.Status != 403 || r.Err.Reason != "method" {
		t.Errorf("%s before its wider role is approved: POST %d %q, want 403 method", pid, r.Status, r.Err.Reason)
	}

	// Revoking twice is refused, and audited once.
	alice.post("/portal/keys/"+pid+"/revoke", url.Values{})
	if status, _ := alice.post("/portal/keys/"+pid+"/revoke", url.Values{}); status != http.StatusConflict {
		t.Errorf("revoking %s twice: %d, want 409", pid, status)
	}

	// The playground without a key shows the gateway's answer as it is.
	status, body := alice.post("/portal/playground", url.Values{"service": {"echo"}, "method": {"GET"}, "path": {"/echo/hello"}, "key": {""}})
	if status != 200 || !strings.Contains(body, "missing_key") || strings.Contains(body, "…{") {
		t.Errorf("playground without a key: %d, body garbled or missing", status)
	}
	// A malformed key is not sent (it would count against the portal's address).
	if _, body := alice.post("/portal/playground", url.Values{"service": {"echo"}, "method": {"GET"}, "path": {"/echo/hello"}, "key": {"DEV_API_short"}}); !strings.Contains(body, "Not sent") {
		t.Error("a malformed key was sent from the playground")
	}
}

// TestPortalUnknownUserPlaceholder: a user placeholder that resolves to
// nothing (a typo, a header that is missing) is no identity, never one
// shared by every visitor.
func TestPortalUnknownUserPlaceholder(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.json")
	os.WriteFile(keys, []byte(`{"keys": []}`), 0o600)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\tapikey_portal {\n\t\tuser {http.auth.user.email}\n\t\tkeys file %s\n\t\tservice echo /echo/hello\n\t}\n}\n", port, keys))
	if r := gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/portal/keys", port)); r.Status != http.StatusUnauthorized {
		t.Fatalf("an unresolved user placeholder: %d, want 401", r.Status)
	}
}
