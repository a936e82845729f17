package portal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/moodmnky/caddy-apikey/internal/browsertest"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
)

// TestPortalInBrowser runs examples/portal/Caddyfile (on free ports) and
// drives the developer portal in a real headless Chromium, as alice, bob and
// admin, checking what a developer relies on: a key shown once, usage,
// permissions, rotation, revocation, isolation between developers,
// approval, the playground's explanations, labels, keyboard, phone width
// and the CSP. It runs twice: on the demo's key file, and on Redis (under
// -short only on the key file).
//
// With APIKEY_SCREENSHOTS=<folder>, it saves screenshots of the main pages
// there (docs/screenshots holds a set).
func TestPortalInBrowser(t *testing.T) {
	for _, variant := range []struct {
		name  string
		redis bool
	}{{"key file", false}, {"redis", true}} {
		if variant.redis && testing.Short() {
			// -short: the flows on a key file; Redis stores the same
			// records, and its store contract is tested on its own.
			continue
		}
		t.Run(variant.name, func(t *testing.T) {
			p, dir := startPortalDemo(t, variant.redis)
			if variant.name == "key file" {
				p.shots = os.Getenv("APIKEY_SCREENSHOTS")
			}
			p.run(t)
			// The keys were kept where the variant says.
			data, err := os.ReadFile(filepath.Join(dir, "keys.json"))
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range p.created {
				if inFile := strings.Contains(string(data), id); inFile == variant.redis {
					t.Errorf("key %s is in the key file: %v, want %v", id, inFile, !variant.redis)
				}
			}
		})
	}
}

// fullSuiteOnly leaves a browser test out of the quick pass (-short),
// which keeps four of them: the developer's whole path on the key file
// (TestPortalInBrowser), a secret shown once (TestPortalShowsASecretOnce…),
// who may see and change a team's key (TestPortalTeamKeys) and the form
// token (TestPortalFormTokenFromAnotherPort…). Each browser test costs
// seconds of CPU for its tabs alone, so the others run in the full suite,
// which CI runs.
func fullSuiteOnly(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a browser test of the full suite: -short leaves it out")
	}
}

// startPortalDemo runs examples/portal/Caddyfile on free ports, on a key
// file (in the folder it returns) or on Redis, with a browser to drive it.
func startPortalDemo(t *testing.T, redis bool) (*portalDemo, string) {
	t.Helper()
	// A bound against a browser that hangs, not a speed test: a variant
	// takes about 25 s on an idle machine and took 82 s under -race on a
	// loaded one.
	return startPortalDemoWithin(t, redis, 5*time.Minute)
}

// startPortalDemoWithin is startPortalDemo with a browser that gives up
// after timeout, on the demo's Caddyfile as edits change it.
func startPortalDemoWithin(t *testing.T, redis bool, timeout time.Duration, edits ...func(cfg string) string) (*portalDemo, string) {
	t.Helper()
	demo, err := os.ReadFile("../examples/portal/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		// -short: the demo runs as a process of its own (the built
		// cmd/caddy), so that two browser tests run at once; the full
		// suite runs it in the test binary, where -race sees the portal.
		// Before the browser starts: its time runs from there.
		t.Parallel()
	}
	b := browsertest.Start(t, timeout)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.json"), []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	gw, admin := gatewaytest.Port(t), gatewaytest.Port(t)
	cfg := strings.NewReplacer(
		"localhost:8080", fmt.Sprintf("localhost:%d", gw),
		"localhost:2019", fmt.Sprintf("localhost:%d", admin),
	).Replace(string(demo))
	if !strings.Contains(cfg, fmt.Sprintf("localhost:%d", gw)) || !strings.Contains(cfg, fmt.Sprintf("admin localhost:%d", admin)) {
		t.Fatal("the portal demo's ports were not found")
	}
	for _, edit := range edits {
		cfg = edit(cfg)
	}
	if redis {
		cfg = portalOnRedis(t, cfg, redistest.Start(t).Addr())
	}
	if testing.Short() {
		gatewaytest.StartProcess(t, cfg, "APIKEY_DEMO_DIR="+dir)
	} else {
		t.Setenv("APIKEY_DEMO_DIR", dir)
		gatewaytest.Start(t, cfg)
	}
	return &portalDemo{base: fmt.Sprintf("http://localhost:%d", gw), b: b}, dir
}

// portalOnRedis makes the demo keep its keys in Redis: every keys file
// becomes keys redis, which the global apikey { redis { … } } option
// (merged into the demo's global options) points at addr.
func portalOnRedis(t *testing.T, cfg, addr string) string {
	t.Helper()
	const keysFile = "keys file {$APIKEY_DEMO_DIR:/tmp/apikey-portal-demo}/keys.json"
	if n := strings.Count(cfg, keysFile); n != 3 {
		t.Fatalf("the portal demo names its key file %d times, want 3 (the portal and two routes)", n)
	}
	cfg = strings.ReplaceAll(cfg, keysFile, "keys redis")
	global := "{\n\tadmin localhost:"
	if !strings.HasPrefix(strings.TrimLeft(withoutComments(cfg), "\n"), global) {
		t.Fatal("the portal demo does not start with its global options and admin")
	}
	i := strings.Index(cfg, global)
	// A timeout a loaded test machine's Redis meets (the default is for a
	// production network): a page's request answered 503 unavailable
	// otherwise, under two -race runs side by side.
	return cfg[:i] + "{\n\tapikey {\n\t\tredis {\n\t\t\taddress " + addr + "\n\t\t\ttimeout 2s\n\t\t}\n\t}\n" + cfg[i+2:]
}

func withoutComments(cfg string) string {
	var out []string
	for _, line := range strings.Split(cfg, "\n") {
		if !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// portalDemo is the running demo and the three signed-in tabs.
type portalDemo struct {
	base              string
	b                 *browsertest.Browser
	alice, bob, admin context.Context
	shots             string   // where screenshots go; "" for none
	created           []string // the ids of the keys made
	console           consoleWatch
}

// demoPasswords are the demo users' passwords; carol is a user of the
// teams tests' identity provider only.
var demoPasswords = map[string]string{"alice": "alice-demo", "bob": "bob-demo", "carol": "carol-demo", "admin": "admin-demo"}

// run is every flow, in order. The first six go on with the key the first
// makes, and are skipped when it made none; the others make their own
// keys.
func (p *portalDemo) run(t *testing.T) {
	p.alice = p.signIn(t, "alice")
	p.bob = p.signIn(t, "bob")
	p.admin = p.signIn(t, "admin")
	var first createdKey
	var beforeRotation string // first's secret before it was rotated
	steps := []struct {
		name  string
		chain bool // uses first, as the steps before left it
		fn    func(t *testing.T)
	}{
		{"create shows the key once", true, func(t *testing.T) { first = p.createShowsKeyOnce(t) }},
		{"usage", true, func(t *testing.T) { p.usage(t, first) }},
		{"edit permissions", true, func(t *testing.T) { p.editPermissions(t, first) }},
		{"rotate", true, func(t *testing.T) { beforeRotation, first.secret = first.secret, p.rotate(t, first) }},
		{"bob cannot see or change alice's key", true, func(t *testing.T) { p.isolation(t, first) }},
		{"revoke", true, func(t *testing.T) { p.revoke(t, first, beforeRotation) }},
		{"admin approves a prod key", false, p.approval},
		{"playground explains", false, p.playground},
		{"labels, keyboard, phone width", false, p.accessibility},
		{"CSP", false, p.csp},
	}
	for _, s := range steps {
		if s.chain && first.id == "" && s.name != steps[0].name {
			continue // no key to go on with
		}
		t.Run(s.name, s.fn)
	}
}

// signIn opens a tab of its own for a demo user, whose console is watched.
func (p *portalDemo) signIn(t *testing.T, user string) context.Context {
	ctx := p.b.User(user, demoPasswords[user])
	p.console.watch(t, user, ctx)
	return ctx
}

// createdKey is a key made on the portal; failure messages name its id,
// never its secret.
type createdKey struct {
	id, secret string
}

// createKey fills and submits the Create key form, and reads the key off
// the page that shows it once.
func (p *portalDemo) createKey(t *testing.T, ctx context.Context, name, typ string) createdKey {
	t.Helper()
	p.open(t, ctx, "/portal/keys/new")
	tabDo(t, ctx, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.Click(chromedp.CSS(`input[name=type][value=`+typ+`]`)),
		chromedp.SetValue(chromedp.ID("role"), "reader"),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
	)
	if checked := tabEval[bool](t, ctx, `document.querySelector('input[name=services][value=echo]').checked && document.querySelector('input[name=type][value=`+typ+`]').checked`); !checked {
		t.Fatal("clicking the echo service and the type did not check them")
	}
	p.submit(t, ctx, `form[action="/portal/keys"] button[type=submit]`)
	k := p.shownKey(t, ctx)
	if k.secret == "" || k.id == "" {
		t.Fatalf("no key was shown after Generate key; the page says: %s", p.alerts(t, ctx))
	}
	p.created = append(p.created, k.id)
	wantPrefix := map[string]string{"dev": "DEV_API_", "prod": "PROD_API_"}[typ]
	if !strings.HasPrefix(k.secret, wantPrefix) {
		t.Fatalf("key %s: the shown secret does not start with %s", k.id, wantPrefix)
	}
	return k
}

// shownKey reads the id and the secret off the page that shows a key once
// (empty when the page shows none).
func (p *portalDemo) shownKey(t *testing.T, ctx context.Context) createdKey {
	t.Helper()
	return createdKey{
		secret: tabEval[string](t, ctx, `document.getElementById('secret')?.value ?? ''`),
		id:     tabEval[string](t, ctx, `document.querySelector('.card.secret p code')?.textContent ?? ''`),
	}
}

func (p *portalDemo) createShowsKeyOnce(t *testing.T) createdKey {
	ctx := p.alice
	k := p.createKey(t, ctx, "ci pipeline", "dev")
	if text := tabEval[string](t, ctx, `document.querySelector('.card.secret').innerText`); !strings.Contains(text, "only time the key is shown") {
		t.Errorf("key %s: the page does not warn that the key is shown once", k.id)
	}
	p.screenshot(t, ctx, "key-created.png")

	// Copy puts the key on the clipboard.
	bctx := chromedp.FromContext(ctx).BrowserContextID
	for _, perm := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: perm}, Setting: browser.PermissionSettingGranted,
			Origin: p.base, BrowserContextID: bctx,
		}); err != nil {
			t.Fatalf("granting %s: %v", perm, err)
		}
	}
	// The clipboard works only in a focused page; a headless tab is not.
	if _, err := chromedp.Call(ctx, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	tabDo(t, ctx, "clicking Copy", chromedp.Click(chromedp.CSS(`button[data-copy=secret]`)))
	status := tabPoll(t, ctx, `document.querySelector('.card.secret .copied').textContent`)
	if status != "Copied." {
		t.Errorf("key %s: after Copy the status says %q, want Copied.", k.id, status)
	}
	clip, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Errorf("reading the clipboard: %v", err)
	} else if clip != k.secret {
		t.Errorf("key %s: the clipboard holds %d characters after Copy, not the key", k.id, len(clip))
	}

	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 || !strings.Contains(r.body, k.id) {
		t.Fatalf("key %s: GET /echo/hello answered %d %s %s, want 200 naming the key", k.id, r.status, r.code, r.reason)
	}

	// Never again. Reloading the page sends the form again (a headed
	// browser asks first), which may make another key: never this one.
	tabDo(t, ctx, "reloading the key's page", chromedp.Reload())
	if strings.Contains(p.html(t, ctx), k.secret) {
		t.Errorf("reloading the page that showed key %s shows its secret again", k.id)
	}
	if again := tabEval[string](t, ctx, `document.querySelector('.card.secret p code')?.textContent ?? ''`); again != "" {
		p.created = append(p.created, again)
	}
	// Nor on my keys, nor on the key's page, nor when those are reloaded.
	for _, path := range []string{"/portal/keys", "/portal/keys/" + k.id} {
		p.open(t, ctx, path)
		html := p.html(t, ctx)
		if !strings.Contains(html, k.id) {
			t.Errorf("%s does not show key %s at all, so the check below proves nothing", path, k.id)
		}
		if strings.Contains(html, k.secret) {
			t.Errorf("%s shows key %s's secret again", path, k.id)
		}
		tabDo(t, ctx, "reloading "+path, chromedp.Reload())
		if strings.Contains(p.html(t, ctx), k.secret) {
			t.Errorf("%s shows key %s's secret after a reload", path, k.id)
		}
	}
	return k
}

// usage: the requests made with the key show on the chart and in the table.
func (p *portalDemo) usage(t *testing.T, k createdKey) {
	ctx := p.alice
	for range 2 {
		if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
			t.Fatalf("key %s: %d %s", k.id, r.status, r.code)
		}
	}
	const want = 3 // with the one createShowsKeyOnce made
	var got usageOnPage
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.open(t, ctx, "/portal/usage")
		got = readUsage(t, ctx)
		if got.sum == want && got.byKey[k.id] == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got.bars != 24 {
		t.Errorf("the chart has %d bars, want 24 (hours)", got.bars)
	}
	if got.sum != want || got.tall == 0 {
		t.Errorf("the chart's bars count %d requests (%d drawn taller than nothing), want %d", got.sum, got.tall, want)
	}
	if got.byKey[k.id] != want {
		t.Errorf("the usage table counts %d requests for key %s, want %d (table: %v)", got.byKey[k.id], k.id, want, got.byKey)
	}
}

type usageOnPage struct {
	bars, tall int
	sum        int64
	byKey      map[string]int64
}

func readUsage(t *testing.T, ctx context.Context) usageOnPage {
	t.Helper()
	type chartBar struct {
		Requests int64   `json:"requests"`
		Height   float64 `json:"height"`
	}
	type tableRow struct {
		Key      string `json:"key"`
		Requests string `json:"requests"`
	}
	page := tabEval[struct {
		Bars    []chartBar `json:"bars"`
		Columns bool       `json:"columns"`
		Rows    []tableRow `json:"rows"`
	}](t, ctx, `(() => {
		const heads = [...document.querySelectorAll('table.usage thead th')].map(th => th.textContent.trim());
		const key = heads.indexOf('Key'), requests = heads.indexOf('Requests');
		return {
			bars: [...document.querySelectorAll('svg.chart rect.bar')].map(r => ({requests: Number(r.dataset.requests), height: r.getBBox().height})),
			columns: key >= 0 && requests >= 0,
			rows: [...document.querySelectorAll('table.usage tbody tr')].map(tr => ({key: tr.cells[key]?.textContent.trim() ?? '', requests: tr.cells[requests]?.textContent.trim() ?? ''})),
		};
	})()`)
	u := usageOnPage{bars: len(page.Bars), byKey: map[string]int64{}}
	for _, b := range page.Bars {
		u.sum += b.Requests
		if b.Height > 0 {
			u.tall++
		}
	}
	if len(page.Rows) > 0 && !page.Columns {
		t.Fatal("the usage table has no Key and Requests columns")
	}
	for _, row := range page.Rows {
		var n int64
		if _, err := fmt.Sscan(row.Requests, &n); err != nil {
			t.Fatalf("the usage table's Requests cell %q for key %s is not a number", row.Requests, row.Key)
		}
		u.byKey[row.Key] += n
	}
	return u
}

// editPermissions: a reader may not POST; after the role is changed to
// writer on the key's page, it may.
func (p *portalDemo) editPermissions(t *testing.T, k createdKey) {
	ctx := p.alice
	if r := p.gateway(t, "POST", "/echo/hello", k.secret); r.status != 403 || r.reason != "method" {
		t.Fatalf("key %s (reader): POST answered %d %s/%s, want 403 reason method", k.id, r.status, r.code, r.reason)
	}
	p.open(t, ctx, "/portal/keys/"+k.id)
	if role := tabEval[string](t, ctx, `document.getElementById('role').value`); role != "reader" {
		t.Fatalf("key %s's page shows role %q, want reader", k.id, role)
	}
	tabDo(t, ctx, "choosing writer", chromedp.SetValue(chromedp.ID("role"), "writer"))
	p.submit(t, ctx, `form[action="/portal/keys/`+k.id+`"] button[type=submit]`)
	if flash := p.alerts(t, ctx); !strings.Contains(flash, "Saved") {
		t.Fatalf("saving role writer for key %s: the page says %q", k.id, flash)
	}
	if role := tabEval[string](t, ctx, `document.getElementById('role').value`); role != "writer" {
		t.Errorf("after saving, key %s's page shows role %q, want writer", k.id, role)
	}
	if r := p.gateway(t, "POST", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("key %s (writer): POST answered %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
	}
}

// rotate: a new secret is shown; the old one still works, deprecated.
func (p *portalDemo) rotate(t *testing.T, k createdKey) string {
	ctx := p.alice
	p.open(t, ctx, "/portal/keys/"+k.id)
	p.submit(t, ctx, `form[action="/portal/keys/`+k.id+`/rotate"] button[type=submit]`)
	fresh := tabEval[string](t, ctx, `document.getElementById('secret')?.value ?? ''`)
	if fresh == "" {
		t.Fatalf("rotating key %s showed no new secret; the page says: %s", k.id, p.alerts(t, ctx))
	}
	if fresh == k.secret || !strings.HasPrefix(fresh, "DEV_API_") {
		t.Fatalf("rotating key %s showed the old secret or not a DEV_API_ key", k.id)
	}
	old := p.gateway(t, "GET", "/echo/hello", k.secret)
	if old.status != 200 || old.header.Get("Deprecation") != "true" {
		t.Errorf("key %s's old secret: %d with Deprecation %q, want 200 with Deprecation: true", k.id, old.status, old.header.Get("Deprecation"))
	}
	cur := p.gateway(t, "GET", "/echo/hello", fresh)
	if cur.status != 200 || cur.header.Get("Deprecation") != "" {
		t.Errorf("key %s's new secret: %d with Deprecation %q, want 200 without", k.id, cur.status, cur.header.Get("Deprecation"))
	}
	return fresh
}

// isolation: bob neither sees nor changes alice's key.
func (p *portalDemo) isolation(t *testing.T, k createdKey) {
	ctx := p.bob
	p.open(t, ctx, "/portal/keys")
	if html := p.html(t, ctx); strings.Contains(html, k.id) {
		t.Errorf("bob's /portal/keys shows alice's key %s", k.id)
	} else if !strings.Contains(html, "Signed in as <strong>bob</strong>") {
		t.Errorf("the tab signed in as bob is not bob on the portal")
	}
	p.open(t, ctx, "/portal/keys/"+k.id)
	if text := tabEval[string](t, ctx, `document.querySelector('main').innerText`); !strings.Contains(text, "You have no key with this id.") || strings.Contains(text, "Edit permissions") {
		t.Errorf("bob's page for alice's key %s does not say he has no such key", k.id)
	}
	if status, _, _ := p.page(t, "bob", "GET", "/portal/keys/"+k.id, nil, ""); status != 404 {
		t.Errorf("bob: GET /portal/keys/%s answered %d, want 404", k.id, status)
	}
	if status, _, _ := p.page(t, "alice", "GET", "/portal/keys/"+k.id, nil, ""); status != 200 {
		t.Errorf("alice: GET /portal/keys/%s answered %d, want 200", k.id, status)
	}

	// Crafted posts with bob's own valid form token: refused as a key
	// that is not his (not as a bad token), and nothing changes.
	token := p.csrfToken(t, "bob")
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/portal/keys/" + k.id + "/revoke", url.Values{}},
		{"/portal/keys/" + k.id + "/rotate", url.Values{}},
		{"/portal/keys/" + k.id, url.Values{"name": {"taken"}, "role": {"reader"}, "services": {"echo"}}},
	} {
		c.form.Set("csrf", token)
		status, _, body := p.page(t, "bob", "POST", c.path, c.form, token)
		if status != 404 || !strings.Contains(body, "You have no key with this id.") {
			t.Errorf("bob: POST %s answered %d (%s), want 404: no key with this id", c.path, status, firstAlert(body))
		}
	}
	r := p.gateway(t, "POST", "/echo/hello", k.secret)
	if r.status != 200 || r.header.Get("Deprecation") != "" {
		t.Errorf("after bob's attempts, alice's key %s answers POST with %d (%s, Deprecation %q), want 200 as a writer, not rotated",
			k.id, r.status, r.code, r.header.Get("Deprecation"))
	}
}

// revoke: Revoke… then confirm; the key is refused from then on, with its
// secret from before the rotation too.
func (p *portalDemo) revoke(t *testing.T, k createdKey, old string) {
	ctx := p.alice
	p.open(t, ctx, "/portal/keys/"+k.id)
	p.submit(t, ctx, `a.button.danger[href="/portal/keys/`+k.id+`/revoke"]`)
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Fatalf("key %s stopped working before the revocation was confirmed: %d %s", k.id, r.status, r.code)
	}
	p.submit(t, ctx, `form[action="/portal/keys/`+k.id+`/revoke"] button[type=submit]`)
	if text := p.alerts(t, ctx); !strings.Contains(text, "revoked") {
		t.Fatalf("confirming the revocation of key %s: the page says %q", k.id, text)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 401 || r.code != "revoked_key" {
		t.Errorf("revoked key %s: %d %s, want 401 revoked_key", k.id, r.status, r.code)
	}
	if r := p.gateway(t, "GET", "/echo/hello", old); r.status != 401 || r.code != "revoked_key" {
		t.Errorf("revoked key %s's secret from before its rotation: %d %s, want 401 revoked_key", k.id, r.status, r.code)
	}
	// So the pages must not say that the old secret still works.
	for _, c := range []struct{ path, js string }{
		{"/portal/keys?stopped=1", `[...document.querySelectorAll('table.keys tbody tr')].find(tr => tr.querySelector('code')?.textContent === ` + jsQuote(k.id) + `)?.innerText ?? ''`},
		{"/portal/keys/" + k.id, `document.querySelector('dl.facts')?.innerText ?? ''`},
	} {
		p.open(t, ctx, c.path)
		text := tabEval[string](t, ctx, c.js)
		if !strings.Contains(text, "revoked") {
			t.Errorf("%s does not show key %s as revoked: %q", c.path, k.id, text)
		}
		if strings.Contains(text, "old secret") {
			t.Errorf("%s says revoked key %s's old secret still works (%q), but the gateway refuses it", c.path, k.id, text)
		}
	}
}

// approval: a prod key waits for the admin's approval.
func (p *portalDemo) approval(t *testing.T) {
	k := p.createKey(t, p.alice, "production app", "prod")
	if text := tabEval[string](t, p.alice, `document.querySelector('.card.secret').innerText`); !strings.Contains(text, "works once an administrator approves it") {
		t.Errorf("key %s: the page does not say the prod key waits for approval", k.id)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 403 || r.reason != "pending_approval" {
		t.Fatalf("pending key %s: %d %s/%s, want 403 pending_approval", k.id, r.status, r.code, r.reason)
	}
	// alice may not approve her own key, even with a valid form token.
	token := p.csrfToken(t, "alice")
	if status, _, _ := p.page(t, "alice", "POST", "/portal/admin/keys/"+k.id+"/approve", url.Values{"csrf": {token}}, token); status != 403 {
		t.Errorf("alice approving her own key %s: %d, want 403", k.id, status)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 403 {
		t.Fatalf("key %s works after alice approved it herself: %d", k.id, r.status)
	}

	ctx := p.admin
	p.open(t, ctx, "/portal/admin")
	p.submit(t, ctx, `button[aria-label="Approve key `+k.id+`"]`)
	if flash := p.alerts(t, ctx); !strings.Contains(flash, "Approved") {
		t.Fatalf("approving key %s: the page says %q", k.id, flash)
	}
	if pending := tabEval[string](t, ctx, `document.querySelector('ul.pending')?.innerText ?? ''`); strings.Contains(pending, k.id) {
		t.Errorf("key %s is still listed as waiting after its approval", k.id)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("approved key %s: %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
	}
	p.screenshot(t, ctx, "admin.png")
}

// playground: a key whose daily quota (20) is used up is explained as
// such; no key is explained too.
func (p *portalDemo) playground(t *testing.T) {
	ctx := p.alice
	k := p.createKey(t, ctx, "quota test", "dev")
	sent := 0
	for ; sent < 25; sent++ {
		r := p.gateway(t, "GET", "/echo/hello", k.secret)
		if r.status == 429 {
			if r.code != "quota_exceeded" {
				t.Fatalf("key %s: 429 %s, want quota_exceeded", k.id, r.code)
			}
			break
		}
		if r.status != 200 {
			t.Fatalf("key %s: request %d answered %d %s", k.id, sent+1, r.status, r.code)
		}
	}
	if sent != 20 {
		t.Fatalf("key %s: %d requests passed before 429, want the demo's quota of 20", k.id, sent)
	}

	try := func(key string) (status, explanation string) {
		t.Helper()
		p.open(t, ctx, "/portal/playground")
		tabDo(t, ctx, "filling the playground",
			chromedp.SetValue(chromedp.ID("service"), "echo"),
			chromedp.SetValue(chromedp.ID("method"), "GET"),
			chromedp.SetValue(chromedp.ID("path"), "/echo/hello"),
		)
		if key != "" {
			tabDo(t, ctx, "pasting the key", chromedp.SendKeys(chromedp.ID("apikey"), key))
		}
		p.submit(t, ctx, `form[action="/portal/playground"] button[type=submit]`)
		if key != "" && strings.Contains(p.html(t, ctx), key) {
			t.Errorf("the playground put key %s back in the page", k.id)
		}
		return tabEval[string](t, ctx, `document.getElementById('result-status')?.textContent ?? 'none'`),
			tabEval[string](t, ctx, `document.getElementById('result-explanation')?.textContent ?? ''`)
	}
	status, why := try("")
	if status != "401" || !strings.Contains(why, "no key was sent") {
		t.Errorf("playground without a key: status %s, %q; want 401 explained as no key sent", status, why)
	}
	status, why = try(k.secret)
	if status != "429" || !strings.Contains(why, "quota") || !strings.Contains(why, "resets in") || !strings.Contains(why, "UTC") {
		t.Errorf("playground with key %s past its quota: status %s, %q; want 429 explaining the quota and when it resets", k.id, status, why)
	}
	p.screenshot(t, ctx, "playground-429.png")
}

// mainPages are the portal's main pages, and who sees them.
func (p *portalDemo) mainPages(t *testing.T) []struct {
	ctx  context.Context
	path string
} {
	p.open(t, p.alice, "/portal/keys")
	id := tabEval[string](t, p.alice, `document.querySelector('table.keys tbody a code')?.textContent ?? ''`)
	if id == "" {
		t.Fatal("alice's /portal/keys lists no key")
	}
	return []struct {
		ctx  context.Context
		path string
	}{
		{p.alice, "/portal/keys"}, {p.alice, "/portal/keys/new"}, {p.alice, "/portal/keys/" + id},
		{p.alice, "/portal/usage"}, {p.alice, "/portal/playground"}, {p.admin, "/portal/admin"},
	}
}

// accessibility: every field has a label; the Create key form can be
// filled with the keyboard alone; no page scrolls sideways on a phone.
func (p *portalDemo) accessibility(t *testing.T) {
	pages := p.mainPages(t)
	for _, pg := range pages {
		p.open(t, pg.ctx, pg.path)
		fields := tabEval[struct {
			Count     int      `json:"count"`
			Unlabeled []string `json:"unlabeled"`
		}](t, pg.ctx, `(() => {
			const fields = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
				.filter(el => el.getClientRects().length > 0);
			const labeled = el => (el.getAttribute('aria-label') || '').trim() !== '' ||
				(el.getAttribute('aria-labelledby') || '').split(/\s+/).some(id => id && document.getElementById(id)) ||
				el.closest('label') !== null ||
				(el.id !== '' && document.querySelector('label[for="' + CSS.escape(el.id) + '"]') !== null);
			return {count: fields.length, unlabeled: fields.filter(el => !labeled(el))
				.map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? '[name=' + el.name + ']' : ''))};
		})()`)
		if fields.Count == 0 && pg.path != "/portal/keys" && pg.path != "/portal/admin" {
			t.Errorf("%s has no visible field, so the label check proves nothing", pg.path)
		}
		if len(fields.Unlabeled) > 0 {
			t.Errorf("%s: fields without a label: %v", pg.path, fields.Unlabeled)
		}
	}

	// Keyboard: from the name field, Tab reaches Generate key, staying in
	// the form.
	ctx := p.alice
	p.open(t, ctx, "/portal/keys/new")
	tabDo(t, ctx, "focusing the name field", chromedp.Focus(chromedp.ID("name")))
	var path []string
	reached := false
	for range 30 {
		tabDo(t, ctx, "pressing Tab", chromedp.KeyEvent(kb.Tab))
		at := tabEval[struct {
			What   string `json:"what"`
			InForm bool   `json:"inForm"`
			Submit bool   `json:"submit"`
		}](t, ctx, `(() => {
			const el = document.activeElement;
			return {what: el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? '[' + el.name + ']' : '') + (el.tagName === 'BUTTON' ? ' ' + el.textContent.trim() : ''),
				inForm: el.closest('form[action="/portal/keys"]') !== null,
				submit: el.matches('button[type=submit]') && el.textContent.trim() === 'Generate key'};
		})()`)
		path = append(path, at.What)
		if at.Submit {
			reached = true
			break
		}
		if !at.InForm {
			t.Errorf("Tab from the name field left the form before Generate key: %v", path)
			break
		}
	}
	if !reached {
		t.Errorf("Tab from the name field never reached Generate key: %v", path)
	} else if len(path) < 5 {
		t.Errorf("Tab went from the name field to Generate key in %d steps, skipping the fields: %v", len(path), path)
	}

	// Phone width.
	for _, pg := range pages {
		tabDo(t, pg.ctx, "emulating a phone", chromedp.EmulateViewport(390, 844))
	}
	for _, pg := range pages {
		p.open(t, pg.ctx, pg.path)
		w := tabEval[struct {
			Scroll int `json:"scroll"`
			Client int `json:"client"`
			Inner  int `json:"inner"`
		}](t, pg.ctx, `({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth, inner: window.innerWidth})`)
		if w.Inner != 390 {
			t.Errorf("%s: the phone viewport is %d wide, want 390", pg.path, w.Inner)
		}
		// clientWidth is the viewport less a vertical scrollbar: content
		// wider than it scrolls sideways.
		if w.Scroll > w.Client {
			t.Errorf("%s scrolls sideways at phone width: %d wide in a %d-wide viewport", pg.path, w.Scroll, w.Client)
		}
		if pg.path == "/portal/keys" {
			p.screenshot(t, pg.ctx, "keys-phone.png")
		}
	}
	for _, pg := range pages {
		tabDo(t, pg.ctx, "back to the desktop", chromedp.EmulateViewport(browsertest.Width, browsertest.Height))
	}
	p.open(t, p.alice, "/portal/keys")
	p.screenshot(t, p.alice, "keys.png")
	p.open(t, p.alice, "/portal/usage")
	p.screenshot(t, p.alice, "usage.png")
}

// csp: every main page forbids inline script, and the browser reported no
// violation of the policy during the whole run.
func (p *portalDemo) csp(t *testing.T) {
	pages := p.mainPages(t)
	for _, pg := range pages {
		user := "alice"
		if pg.ctx == p.admin {
			user = "admin"
		}
		status, h, _ := p.page(t, user, "GET", pg.path, nil, "")
		policy := h.Get("Content-Security-Policy")
		if status != 200 {
			t.Errorf("%s: %d", pg.path, status)
		}
		if cspScriptSrc(policy) != "'self'" || strings.Contains(policy, "unsafe-inline") || strings.Contains(policy, "unsafe-eval") {
			t.Errorf("%s: Content-Security-Policy %q, want script-src 'self' and nothing unsafe", pg.path, policy)
		}
	}
	if bad := p.console.matching("Content Security Policy", "Content-Security-Policy"); len(bad) > 0 {
		t.Errorf("the browser reported CSP violations: %q", bad)
	}
	if thrown := p.console.exceptions(); len(thrown) > 0 {
		t.Errorf("the portal's pages threw: %q", thrown)
	}

	// The check above can fail: an inline script in a page of a watched
	// tab is reported.
	ctx := p.b.User("alice", demoPasswords["alice"])
	var probe consoleWatch
	probe.watch(t, "probe", ctx)
	p.open(t, ctx, "/portal/keys")
	tabDo(t, ctx, "adding an inline script", chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.createElement('script'); s.textContent = 'window.inlineRan = true'; document.body.append(s); })()`))
	deadline := time.Now().Add(3 * time.Second)
	for len(probe.matching("Content Security Policy")) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(probe.matching("Content Security Policy")) == 0 {
		t.Error("an inline script was not reported as a CSP violation, so the watch above proves nothing")
	}
	if ran := tabEval[bool](t, ctx, `window.inlineRan === true`); ran {
		t.Error("the CSP let an inline script run")
	}
}

// cspScriptSrc is the sources of a policy's script-src directive.
func cspScriptSrc(policy string) string {
	for _, d := range strings.Split(policy, ";") {
		if name, sources, _ := strings.Cut(strings.TrimSpace(d), " "); name == "script-src" {
			return strings.TrimSpace(sources)
		}
	}
	return ""
}

// consoleWatch collects what tabs wrote to their consoles.
type consoleWatch struct {
	mu     sync.Mutex
	lines  []string
	thrown []string
}

func (c *consoleWatch) watch(t *testing.T, who string, ctx context.Context) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch ev := ev.(type) {
		case *cdplog.EventEntryAdded:
			c.lines = append(c.lines, who+": "+ev.Entry.Text)
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			c.lines = append(c.lines, who+": console."+string(ev.Type)+": "+strings.Join(parts, " "))
		case *runtime.EventExceptionThrown:
			text := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				text += " " + ev.ExceptionDetails.Exception.Description
			}
			c.thrown = append(c.thrown, who+": "+text)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (c *consoleWatch) matching(subs ...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if slices.ContainsFunc(subs, func(s string) bool { return strings.Contains(l, s) }) {
			out = append(out, l)
		}
	}
	return out
}

func (c *consoleWatch) exceptions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.thrown)
}

// open loads a portal page in the tab.
func (p *portalDemo) open(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	tabDo(t, ctx, "opening "+path, chromedp.Navigate(p.base+path))
}

// submit clicks what sel names (a submit button or a link) and waits for
// the page it leads to.
func (p *portalDemo) submit(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	if n := tabEval[int](t, ctx, `document.querySelectorAll(`+jsQuote(sel)+`).length`); n != 1 {
		t.Fatalf("%d elements match %s on the page, want 1; the page says: %s", n, sel, p.alerts(t, ctx))
	}
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel)))); err != nil {
		t.Fatalf("clicking %s: %v", sel, err)
	}
}

// alerts is the text of the page's alerts, to explain a failure.
func (p *portalDemo) alerts(t *testing.T, ctx context.Context) string {
	t.Helper()
	return tabEval[string](t, ctx, `[...document.querySelectorAll('.alert')].map(a => a.innerText).join(' / ') || '(no alert)'`)
}

func (p *portalDemo) html(t *testing.T, ctx context.Context) string {
	t.Helper()
	return tabEval[string](t, ctx, `document.documentElement.outerHTML`)
}

// screenshot saves the tab's page as a PNG when screenshots are asked
// for: all of it, up to the area of a 1200×1100 desktop screen, so each
// file stays small.
func (p *portalDemo) screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if p.shots == "" {
		return
	}
	size := tabEval[struct {
		W float64 `json:"w"`
		H float64 `json:"h"`
	}](t, ctx, `({w: document.documentElement.clientWidth, h: document.documentElement.scrollHeight})`)
	capture := true
	shot, err := chromedp.Call(ctx, page.CaptureScreenshot, page.CaptureScreenshotParams{
		Format:                page.CaptureScreenshotFormatPng,
		Clip:                  &page.Viewport{Width: size.W, Height: min(size.H, 1200*1100/size.W), Scale: 1},
		CaptureBeyondViewport: &capture,
	})
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(p.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.shots, name), shot.Data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// gatewayAnswer is what the gateway answered a request with a key.
type gatewayAnswer struct {
	status       int
	header       http.Header
	body         string
	code, reason string
}

// gateway sends one request through the gateway with key as a bearer
// token.
func (p *portalDemo) gateway(t *testing.T, method, path, key string) gatewayAnswer {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := gatewayAnswer{status: resp.StatusCode, header: resp.Header, body: string(body)}
	var doc struct {
		Error struct {
			Code   string `json:"code"`
			Reason string `json:"reason"`
		} `json:"error"`
	}
	if resp.StatusCode >= 400 && json.Unmarshal(body, &doc) == nil {
		a.code, a.reason = doc.Error.Code, doc.Error.Reason
	}
	return a
}

// page requests a portal page from Go as user; a POST sends form with the
// form token cookie. header is more request headers, name then value.
func (p *portalDemo) page(t *testing.T, user, method, path string, form url.Values, token string, header ...string) (int, http.Header, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, p.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, demoPasswords[user])
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", p.base)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: "apikey_portal_csrf", Value: token})
	}
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, path, user, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}

// csrfToken is the form token the portal gives user's session.
func (p *portalDemo) csrfToken(t *testing.T, user string) string {
	t.Helper()
	req, err := http.NewRequest("GET", p.base+"/portal/keys", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, demoPasswords[user])
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "apikey_portal_csrf" && c.Value != "" {
			return c.Value
		}
	}
	t.Fatalf("GET /portal/keys as %s set no form token cookie", user)
	return ""
}

// firstAlert is the first alert of a portal page, to explain a failure.
func firstAlert(html string) string {
	_, rest, ok := strings.Cut(html, `class="alert`)
	if !ok {
		return "(no alert)"
	}
	_, rest, _ = strings.Cut(rest, ">")
	text, _, _ := strings.Cut(rest, "</p>")
	return text
}

// tabDo runs actions in the tab, failing the test with what was being done.
func tabDo(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// tabEval evaluates a JavaScript expression in the tab's page.
func tabEval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %.80s: %v", js, err)
	}
	return v
}

// tabAwait is tabEval of an expression whose value is a promise: its
// value once settled.
func tabAwait[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %.80s: %v", js, err)
	}
	return v
}

// tabPoll waits (up to 5 s) until a JavaScript expression is a non-empty
// string, and returns it; an evaluation that meets a navigation is tried
// again.
func tabPoll(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The page may be navigating (a form just sent): an evaluation
		// that meets the navigation is tried again.
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err == nil && v != "" {
			return v
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("evaluating %.80s: %v", js, err)
			}
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jsQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
