package apikey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/leak"
)

// scanner is a test secret scanner: an ECDSA P-256 key pair under an
// identifier, as GitHub signs its reports.
type scanner struct {
	id   string
	priv *ecdsa.PrivateKey
}

func newScanner(t *testing.T, id string) scanner {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return scanner{id: id, priv: priv}
}

// document is the scanner's public keys document, in GitHub's shape.
func (s scanner) document(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&s.priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{
		"key_identifier": s.id, "is_current": true,
		"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}}})
	return doc
}

func (s scanner) sign(t *testing.T, body []byte) string {
	t.Helper()
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// headers are the GitHub headers of a report signed by s.
func (s scanner) headers(t *testing.T, body []byte) []string {
	return []string{leak.KeyIDHeader, s.id, leak.SignatureHeader, s.sign(t, body)}
}

// report is a report body of matches, each a token and its url.
func report(tokens ...string) []byte {
	var items []leak.Item
	for i, tok := range tokens {
		items = append(items, leak.Item{Token: tok, Type: "caddy_apikey", URL: fmt.Sprintf("https://github.com/o/r/blob/main/f%d.env", i), Source: "content"})
	}
	body, _ := json.Marshal(items)
	return body
}

// postReport posts a report with headers (name, value pairs) and returns
// the status and body. It never prints the body, which may hold tokens.
func postReport(t *testing.T, url string, body []byte, headers ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, answer
}

func feedbackOf(t *testing.T, answer []byte) []leak.Feedback {
	t.Helper()
	var fb []leak.Feedback
	if err := json.Unmarshal(answer, &fb); err != nil {
		t.Fatalf("the answer is not a feedback array: %v", err)
	}
	return fb
}

// badChecksum changes a key's last character, so its checksum fails.
func badChecksum(key string) string {
	last := key[len(key)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return key[:len(key)-1] + string(repl)
}

// leakedEvents are the apikey_leaked events recorded since the last take.
func leakedEvents(t *testing.T, secrets ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range takeEvents() {
		if e.Name() != eventLeaked {
			continue
		}
		for _, v := range e.Data {
			s, _ := v.(string)
			for _, secret := range secrets {
				if s != "" && (strings.Contains(s, secret) || strings.Contains(s, leak.TokenHash(secret))) {
					t.Errorf("event %s carries a token or its hash", e.Name())
				}
			}
		}
		out = append(out, e.Data)
	}
	return out
}

// startWithEvents adapts a Caddyfile, subscribes the test recorder to
// apikey_leaked, and runs it in this process until the test ends.
func startWithEvents(t *testing.T, caddyfile string) {
	t.Helper()
	cfg, err := gatewaytest.Adapt(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	doc["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{eventLeaked},
		"handlers": []any{map[string]any{"handler": "apikey_test_recorder"}},
	}}}
	cfg, _ = json.Marshal(doc)
	takeEvents()
	if err := gatewaytest.LoadJSON(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gatewaytest.Stop() })
}

// countLines counts the lines of a file holding want.
func countLines(t *testing.T, path, want string) int {
	t.Helper()
	data, _ := os.ReadFile(path)
	return strings.Count(string(data), want)
}

// waitForStatus polls url with the key until it answers status and code.
func waitForStatus(t *testing.T, what, url string, status int, code string, headers ...string) {
	t.Helper()
	gatewaytest.WaitUntil(t, what, 10*time.Second, func() bool {
		r := gatewaytest.Send(t, "GET", url, headers...)
		return r.Status == status && r.Err.Code == code
	})
}

// TestLeakReportRevokesOnEveryInstance: two Caddy instances read one key
// file; a GitHub-signed report to one of them revokes the reported key on
// both, labels each token, writes the audit log and sends apikey_leaked,
// all once. Refused reports (bad signature, unknown key identifier,
// oversized, malformed) and a replayed one change nothing.
func TestLeakReportRevokesOnEveryInstance(t *testing.T) {
	gh := newScanner(t, "gh-test-1")
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "public_keys.json")
	if err := os.WriteFile(pubFile, gh.document(t), 0o600); err != nil {
		t.Fatal(err)
	}
	leaked := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_leaked", Type: "dev", Role: "reader"})
	other := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_other", Type: "prod", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, leaked.Record, other.Record)
	auditLog := filepath.Join(dir, "audit.log")
	port, port2 := gatewaytest.Port(t), gatewaytest.Port(t)
	startWithEvents(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	handle /github/leaks {
		apikey_leak_report {
			keys file %[2]s
			public_keys %[3]s
		}
	}
	handle {
		apikey {
			keys file %[2]s
			failed_auth_limit off
			audit_log %[4]s
		}
		respond "ok"
	}
}`, port, keyFile, pubFile, auditLog))
	gatewaytest.StartProcess(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		failed_auth_limit off
	}
	respond "ok"
}`, port2, keyFile))
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/github/leaks", port)
	apis := []string{fmt.Sprintf("http://127.0.0.1:%d/v1", port), fmt.Sprintf("http://127.0.0.1:%d/v1", port2)}
	for i, u := range apis {
		if r := gatewaytest.Send(t, "GET", u, leaked.Bearer()...); r.Status != 200 {
			t.Fatalf("instance %d: k_leaked got %d before any report", i, r.Status)
		}
	}
	unchanged := func(what string) {
		t.Helper()
		data, _ := os.ReadFile(keyFile)
		if strings.Contains(string(data), "leaked_at") || strings.Contains(string(data), `"revoked"`) {
			t.Errorf("%s changed the key file", what)
		}
		if n := countLines(t, auditLog, "key.leaked"); n != 0 {
			t.Errorf("%s wrote %d audit entries", what, n)
		}
		if ev := leakedEvents(t, leaked.Secret); len(ev) != 0 {
			t.Errorf("%s sent %d events", what, len(ev))
		}
		if r := gatewaytest.Send(t, "GET", apis[0], leaked.Bearer()...); r.Status != 200 {
			t.Errorf("after %s, k_leaked got %d", what, r.Status)
		}
	}

	body := report(leaked.Secret, badChecksum(other.Secret), "not-a-key-at-all")
	impostor := newScanner(t, gh.id)
	for _, c := range []struct {
		what    string
		body    []byte
		headers []string
		status  int
	}{
		{"a report signed by another key", body, impostor.headers(t, body), 401},
		{"a report naming an unknown key identifier", body, []string{leak.KeyIDHeader, "gh-unknown", leak.SignatureHeader, gh.sign(t, body)}, 401},
		{"an unsigned report", body, nil, 401},
		{"a signature over another body", body, gh.headers(t, report(leaked.Secret)), 401},
		{"an oversized report", bytes.Repeat([]byte(" "), leak.MaxBody+1), nil, 413},
		{"a report that is not an array", []byte(`{"token": "x"}`), gh.headers(t, []byte(`{"token": "x"}`)), 400},
	} {
		h := c.headers
		if c.status == 413 {
			h = gh.headers(t, c.body)
		}
		if status, _ := postReport(t, endpoint, c.body, h...); status != c.status {
			t.Errorf("%s: %d, want %d", c.what, status, c.status)
		}
		unchanged(c.what)
	}

	// A malformed token alone: answered false_positive, nothing done.
	malformed := report(badChecksum(leaked.Secret))
	status, answer := postReport(t, endpoint, malformed, gh.headers(t, malformed)...)
	if fb := feedbackOf(t, answer); status != 200 || len(fb) != 1 || fb[0].Label != leak.FalsePositive {
		t.Errorf("a malformed token: %d %v", status, fb)
	}
	unchanged("a malformed token")

	// The real report: the first token is a key, the second has a bad
	// checksum, the third is not shaped like a key.
	status, answer = postReport(t, endpoint, body, gh.headers(t, body)...)
	if status != 200 {
		t.Fatalf("the report: %d", status)
	}
	fb := feedbackOf(t, answer)
	if len(fb) != 3 || fb[0].Label != leak.TruePositive || fb[1].Label != leak.FalsePositive || fb[2].Label != leak.FalsePositive {
		t.Fatalf("labels %v, want true, false, false", fb)
	}
	if fb[0].TokenHash != leak.TokenHash(leaked.Secret) || fb[0].TokenType != "caddy_apikey" {
		t.Errorf("feedback 0 names another token or type")
	}
	for i, u := range apis {
		waitForStatus(t, fmt.Sprintf("instance %d refuses k_leaked as revoked", i), u, 401, decisionRevokedKey, leaked.Bearer()...)
		if r := gatewaytest.Send(t, "GET", u, other.Bearer()...); r.Status != 200 {
			t.Errorf("instance %d: k_other got %d", i, r.Status)
		}
	}
	var file struct{ Keys []keystore.Record }
	data, _ := os.ReadFile(keyFile)
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	rec := file.Keys[0]
	if rec.ID != "k_leaked" || !rec.Revoked || rec.LeakedAt == "" || rec.LeakURL != "https://github.com/o/r/blob/main/f0.env" || rec.LeakSource != "content" || rec.LeakAction != "revoke" {
		t.Errorf("the record after the report: id %s revoked %v leaked_at %q url %q source %q action %q", rec.ID, rec.Revoked, rec.LeakedAt, rec.LeakURL, rec.LeakSource, rec.LeakAction)
	}
	if file.Keys[1].LeakedAt != "" || file.Keys[1].Revoked {
		t.Error("k_other was marked")
	}
	line := gatewaytest.WaitForLog(t, auditLog, `"event":"key.leaked"`)
	for _, want := range []string{`"key_id":"k_leaked"`, `"action":"revoke"`, `"leak_url":"https://github.com/o/r/blob/main/f0.env"`, `"leak_source":"content"`} {
		if !strings.Contains(line, want) {
			t.Errorf("the audit entry lacks %s", want)
		}
	}
	log, _ := os.ReadFile(auditLog)
	if strings.Contains(string(log), leaked.Secret) || strings.Contains(string(log), leak.TokenHash(leaked.Secret)) {
		t.Error("the audit log carries the token or its hash")
	}
	ev := leakedEvents(t, leaked.Secret)
	if len(ev) != 1 || ev[0]["key_id"] != "k_leaked" || ev[0]["leak_url"] != "https://github.com/o/r/blob/main/f0.env" || ev[0]["action"] != "revoke" {
		t.Errorf("events %v, want one apikey_leaked for k_leaked", ev)
	}

	// The same body again: the same answer, nothing more done. Another
	// report of the same key: true_positive, the first report kept.
	status, again := postReport(t, endpoint, body, gh.headers(t, body)...)
	if status != 200 || !bytes.Equal(again, answer) {
		t.Errorf("the replayed report: %d, same answer %v", status, bytes.Equal(again, answer))
	}
	second := report(leaked.Secret + "")
	second = bytes.Replace(second, []byte("f0.env"), []byte("elsewhere.env"), 1)
	status, answer = postReport(t, endpoint, second, gh.headers(t, second)...)
	if fb := feedbackOf(t, answer); status != 200 || len(fb) != 1 || fb[0].Label != leak.TruePositive {
		t.Errorf("a second report of the key: %d %v", status, fb)
	}
	if n := countLines(t, auditLog, "key.leaked"); n != 1 {
		t.Errorf("%d key.leaked audit entries after a replay and a second report, want 1", n)
	}
	if ev := leakedEvents(t, leaked.Secret); len(ev) != 0 {
		t.Errorf("%d more events after a replay and a second report", len(ev))
	}
	data, _ = os.ReadFile(keyFile)
	if !strings.Contains(string(data), "f0.env") || strings.Contains(string(data), "elsewhere.env") {
		t.Error("the second report changed the record's leak_url")
	}

	// caddy apikey list says leaked.
	out, errOut, code := gatewaytest.CLI(t, "", "list", "--keys", keyFile)
	if code != 0 || !regexpLine(out, "k_leaked", "leaked") {
		t.Errorf("list: exit %d, %s\n%s", code, errOut, out)
	}
}

// regexpLine reports whether a line of out holds both words.
func regexpLine(out, a, b string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, a) && strings.Contains(l, b) {
			return true
		}
	}
	return false
}

// TestLeakReportRedisInstances: two Caddy instances read their keys from
// one redis-server; the report endpoint fetches the scanner's public keys
// from a URL. A report to one instance revokes the key on both.
func TestLeakReportRedisInstances(t *testing.T) {
	srv := redistest.Start(t)
	gh := newScanner(t, "gh-test-redis")
	doc := gh.document(t)
	keysServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	}))
	t.Cleanup(keysServer.Close)
	key := gatewaytest.NewKeyByCLI(t, "--redis", srv.Addr(), "--type", "prod", "--role", "reader", "--id", "k_redis_leak")
	up := gatewaytest.NewUpstream(t)
	port, port2, admin2 := gatewaytest.Port(t), gatewaytest.Port(t), gatewaytest.Port(t)
	startWithEvents(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	handle /leaks {
		apikey_leak_report {
			keys redis {
				address %[2]s
			}
			public_keys_url %[3]s
		}
	}
	handle {
		apikey {
			keys redis {
				address %[2]s
			}
			failed_auth_limit off
		}
		respond "ok"
	}
}`, port, srv.Addr(), keysServer.URL))
	gatewaytest.StartProcess(t, redisKeysSite(port2, admin2, srv.Addr(), up.Addr()))
	auth := []string{"Authorization", "Bearer " + key}
	apis := []string{fmt.Sprintf("http://127.0.0.1:%d/v1", port), fmt.Sprintf("http://127.0.0.1:%d/v1/models", port2)}
	for i, u := range apis {
		if r := gatewaytest.Send(t, "GET", u, auth...); r.Status != 200 {
			t.Fatalf("instance %d: the key got %d before any report", i, r.Status)
		}
	}
	body := report(key)
	status, answer := postReport(t, fmt.Sprintf("http://127.0.0.1:%d/leaks", port), body, gh.headers(t, body)...)
	if fb := feedbackOf(t, answer); status != 200 || len(fb) != 1 || fb[0].Label != leak.TruePositive {
		t.Fatalf("the report: %d %v", status, fb)
	}
	for i, u := range apis {
		waitForStatus(t, fmt.Sprintf("instance %d refuses the key as revoked", i), u, 401, decisionRevokedKey, auth...)
	}
	if ev := leakedEvents(t, key); len(ev) != 1 || ev[0]["key_id"] != "k_redis_leak" || ev[0]["key_type"] != "prod" {
		t.Errorf("events %v", ev)
	}
	out, _, _ := gatewaytest.CLI(t, "", "list", "--redis", srv.Addr())
	if !regexpLine(out, "k_redis_leak", "leaked") {
		t.Errorf("list does not show the key leaked:\n%s", out)
	}
}

// TestLeakReportHMAC: an internal scanner signs with a shared secret
// from the environment; prod keys are paused (403, reason paused), dev
// keys only marked (they keep working). Bad and missing signatures are
// refused, and past the rate, refused requests get 429 while signed
// reports still get through.
func TestLeakReportHMAC(t *testing.T) {
	const secret = "internal-scanner-secret"
	t.Setenv("APIKEY_TEST_LEAK_HMAC", secret)
	prod := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_prod_leak", Type: "prod", Role: "reader"})
	dev := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_dev_leak", Type: "dev", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, prod.Record, dev.Record)
	port := gatewaytest.Port(t)
	startWithEvents(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	handle /leaks {
		apikey_leak_report {
			keys file %[2]s
			hmac {env.APIKEY_TEST_LEAK_HMAC}
			action pause
			action dev notify
			rate 3/h
		}
	}
	handle {
		apikey {
			keys file %[2]s
			failed_auth_limit off
		}
		respond "ok"
	}
}`, port, keyFile))
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/leaks", port)
	api := fmt.Sprintf("http://127.0.0.1:%d/v1", port)
	body := report(prod.Secret, dev.Secret)
	for what, h := range map[string][]string{"another secret": hmacSigned(body, "guess"), "no signature": nil, "a GitHub signature": {leak.KeyIDHeader, "k", leak.SignatureHeader, "c2ln"}} {
		if status, _ := postReport(t, endpoint, body, h...); status != 401 {
			t.Errorf("%s: %d, want 401", what, status)
		}
	}
	if status, _ := postReport(t, endpoint, body); status != 429 {
		t.Errorf("a fourth refused request in the hour: %d, want 429", status)
	}
	if r := gatewaytest.Send(t, "GET", api, prod.Bearer()...); r.Status != 200 {
		t.Fatalf("the refused reports changed the prod key: %d", r.Status)
	}
	status, answer := postReport(t, endpoint, body, hmacSigned(body, secret)...)
	if fb := feedbackOf(t, answer); status != 200 || len(fb) != 2 || fb[0].Label != leak.TruePositive || fb[1].Label != leak.TruePositive {
		t.Fatalf("the signed report: %d %v", status, fb)
	}
	waitForStatus(t, "the prod key is paused", api, 403, decisionForbidden, prod.Bearer()...)
	if r := gatewaytest.Send(t, "GET", api, prod.Bearer()...); r.Err.Reason != reasonPaused {
		t.Errorf("the paused key's reason: %q", r.Err.Reason)
	}
	if r := gatewaytest.Send(t, "GET", api, dev.Bearer()...); r.Status != 200 {
		t.Errorf("the dev key (notify) got %d", r.Status)
	}
	ev := leakedEvents(t, prod.Secret, dev.Secret)
	actions := map[any]any{}
	for _, e := range ev {
		actions[e["key_id"]] = e["action"]
	}
	if len(ev) != 2 || actions["k_prod_leak"] != "pause" || actions["k_dev_leak"] != "notify" {
		t.Errorf("events %v", ev)
	}
	out, _, _ := gatewaytest.CLI(t, "", "list", "--keys", keyFile)
	if !regexpLine(out, "k_dev_leak", "leaked") || !regexpLine(out, "k_prod_leak", "leaked") {
		t.Errorf("list:\n%s", out)
	}
}

// TestLeakReportOfASecretPastItsGrace: a report of a rotated-out secret
// whose grace has ended is answered false_positive and changes nothing: the
// key's current secret, never leaked, keeps working. (One still in its
// grace counts for its key; see TestLeakReportRevokesOnEveryInstance.)
func TestLeakReportOfASecretPastItsGrace(t *testing.T) {
	const secret = "internal-scanner-secret"
	t.Setenv("APIKEY_TEST_LEAK_HMAC", secret)
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_old_secret", Type: "dev", Role: "reader"})
	cur := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_rotated_leak", Type: "dev", Role: "reader",
		PreviousHashes: []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}}})
	keyFile := gatewaytest.WriteKeyFile(t, cur.Record)
	endpoint, api := startHMACLeakSite(t, keyFile)
	body := report(old.Secret)
	status, answer := postReport(t, endpoint, body, hmacSigned(body, secret)...)
	if fb := feedbackOf(t, answer); status != 200 || len(fb) != 1 || fb[0].Label != leak.FalsePositive {
		t.Fatalf("a report of key %s's old secret past its grace: %d %v, want false_positive", cur.Record.ID, status, fb)
	}
	if r := gatewaytest.Send(t, "GET", api, cur.Bearer()...); r.Status != 200 {
		t.Errorf("key %s's current secret after a report of its expired old one: %d %s", cur.Record.ID, r.Status, r.Err.Code)
	}
}

// startHMACLeakSite starts a Caddy with a leak endpoint at /leaks taking
// reports signed with $APIKEY_TEST_LEAK_HMAC, and an apikey route beside
// it, both on keyFile.
func startHMACLeakSite(t *testing.T, keyFile string) (endpoint, api string) {
	t.Helper()
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	handle /leaks {
		apikey_leak_report {
			keys file %[2]s
			hmac {env.APIKEY_TEST_LEAK_HMAC}
		}
	}
	handle {
		apikey {
			keys file %[2]s
			failed_auth_limit off
		}
		respond "ok"
	}
}`, port, keyFile))
	return fmt.Sprintf("http://127.0.0.1:%d/leaks", port), fmt.Sprintf("http://127.0.0.1:%d/v1", port)
}

// hmacSigned is the header that signs body with secret, as an internal
// scanner does.
func hmacSigned(body []byte, secret string) []string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return []string{leak.HMACHeader, "sha256=" + hex.EncodeToString(mac.Sum(nil))}
}

// TestLeakReportRefusesMalformedBodies: a signed body that is not a JSON
// array of match objects (an object, a string, null, a number too large
// for any type, nested arrays, a field that is not a string, ...) gets 400
// malformed with a message that says what is wrong (never the body's
// text), and changes nothing.
func TestLeakReportRefusesMalformedBodies(t *testing.T) {
	const secret = "internal-scanner-secret"
	t.Setenv("APIKEY_TEST_LEAK_HMAC", secret)
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_malformed", Type: "dev", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, k.Record)
	before, _ := os.ReadFile(keyFile)
	endpoint, api := startHMACLeakSite(t, keyFile)
	tok := `"` + k.Secret + `"`
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"token":`+tok+`},`, leak.MaxItems+1), ",") + "]"
	for _, c := range []struct{ what, body, message string }{
		{"an object", `{"token": ` + tok + `}`, "the body must be a JSON array of token reports"},
		{"an empty object", `{}`, "the body must be a JSON array of token reports"},
		{"a string", tok, "the body must be a JSON array of token reports"},
		{"null", `null`, "the body must be a JSON array of token reports"},
		{"a number too large", `1e999999`, "the body must be a JSON array of token reports"},
		{"nothing", ``, "the body must be a JSON array of token reports"},
		{"an empty array", `[]`, "the report has no matches"},
		{"nested arrays", `[[{"token": ` + tok + `}]]`, "match 0 is not a JSON object"},
		{"a null match", `[null]`, "match 0 is not a JSON object"},
		{"a string match", `[{"token": ` + tok + `}, ` + tok + `]`, "match 1 is not a JSON object"},
		{"a number as the token", `[{"token": 1e999999}]`, "match 0: its token is not a string"},
		{"an object as the url", `[{"token": ` + tok + `, "url": {"a": ` + tok + `}}]`, "match 0: its url is not a string"},
		{"a torn array", `[{"token": ` + tok + `}`, "the body is not valid JSON"},
		{"text after the array", `[{"token": ` + tok + `}] ` + tok, "the body has more after its JSON array"},
		{"too many matches", many, fmt.Sprintf("the report has more than %d matches", leak.MaxItems)},
	} {
		status, answer := postReport(t, endpoint, []byte(c.body), hmacSigned([]byte(c.body), secret)...)
		if bytes.Contains(answer, []byte(k.Secret)) {
			t.Errorf("%s: the answer carries key %s's secret", c.what, k.Record.ID)
			continue
		}
		var refusal struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(answer, &refusal)
		if status != 400 || refusal.Error.Code != "malformed" || !strings.Contains(refusal.Error.Message, c.message) || strings.Contains(refusal.Error.Message, "  ") {
			t.Errorf("%s: %d %s %q, want 400 malformed saying %q", c.what, status, refusal.Error.Code, refusal.Error.Message, c.message)
		}
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(after, before) {
		t.Error("a malformed report changed the key file")
	}
	if r := gatewaytest.Send(t, "GET", api, k.Bearer()...); r.Status != 200 {
		t.Errorf("key %s after the malformed reports: %d %s", k.Record.ID, r.Status, r.Err.Code)
	}
}
