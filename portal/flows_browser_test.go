package portal_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// demoRecords are the records of the demo's key file.
func demoRecords(t *testing.T, dir string) map[string]keystore.Record {
	t.Helper()
	var file struct {
		Keys []keystore.Record `json:"keys"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	out := map[string]keystore.Record{}
	for _, r := range file.Keys {
		out[r.ID] = r
	}
	return out
}

// TestPortalShowsASecretOnceAfterARedirect: creating or rotating a key
// sends the form once, then shows the secret on a page of its own (not in
// its address); reloading that page or going Back to it says the secret
// was shown already, and makes no second key and no second rotation.
func TestPortalShowsASecretOnceAfterARedirect(t *testing.T) {
	p, dir := startPortalDemo(t, false)
	ctx := p.signIn(t, "alice")
	k := p.createKey(t, ctx, "ci pipeline", "dev")
	if where := tabEval[string](t, ctx, `location.href`); strings.Contains(where, k.secret) {
		t.Fatalf("key %s: the page showing the secret has it in its address", k.id)
	}
	alreadyShown := func(what string) {
		t.Helper()
		html := p.html(t, ctx)
		if strings.Contains(html, k.secret) {
			t.Errorf("%s shows key %s's secret again", what, k.id)
		}
		if text := tabEval[string](t, ctx, `document.querySelector('main')?.innerText ?? ''`); !strings.Contains(text, "shown already") {
			t.Errorf("%s does not say key %s's secret was shown already: %.200q", what, k.id, text)
		}
		if n := len(demoRecords(t, dir)); n != 1 {
			t.Errorf("after %s alice has %d keys, want 1 (no second key)", what, n)
		}
	}
	// Straight Back to the page that showed it: the browser may keep that
	// page to show again (Chromium's back/forward cache), and it must not
	// show the secret.
	p.open(t, ctx, "/portal/keys")
	tabDo(t, ctx, "going back", chromedp.NavigateBack())
	tabPoll(t, ctx, `document.readyState === 'complete' && (document.querySelector('main')?.innerText ?? '').includes('shown already') ? 'yes' : ''`)
	alreadyShown("Back from my keys to the page that showed the key")
	tabDo(t, ctx, "reloading the page that showed the key", chromedp.Reload())
	alreadyShown("reloading")
	p.open(t, ctx, "/portal/keys")
	tabDo(t, ctx, "going back", chromedp.NavigateBack())
	alreadyShown("Back from my keys")

	// Rotating: the new secret is shown once; a reload rotates no more.
	p.open(t, ctx, "/portal/keys/"+k.id)
	p.submit(t, ctx, `form[action="/portal/keys/`+k.id+`/rotate"] button[type=submit]`)
	fresh := tabEval[string](t, ctx, `document.getElementById('secret')?.value ?? ''`)
	if fresh == "" || fresh == k.secret {
		t.Fatalf("rotating key %s showed no new secret; the page says: %s", k.id, p.alerts(t, ctx))
	}
	k.secret = fresh
	for _, step := range []struct {
		what    string
		actions []chromedp.Action[chromedp.Void]
	}{
		{"reloading the rotated key's page", []chromedp.Action[chromedp.Void]{chromedp.Reload()}},
		{"going Back to it", []chromedp.Action[chromedp.Void]{chromedp.Navigate(p.base + "/portal/keys"), chromedp.NavigateBack()}},
	} {
		tabDo(t, ctx, step.what, step.actions...)
		alreadyShown(step.what)
		if n := len(demoRecords(t, dir)[k.id].PreviousHashes); n != 1 {
			t.Errorf("after %s key %s has %d old secrets, want 1 (rotated once)", step.what, k.id, n)
		}
		if r := p.gateway(t, "GET", "/echo/hello", fresh); r.status != 200 || r.header.Get("Deprecation") != "" {
			t.Errorf("after %s, key %s's shown secret answers %d (Deprecation %q), want 200 as the current secret",
				step.what, k.id, r.status, r.header.Get("Deprecation"))
		}
	}
}

// TestPortalPlaygroundSendsOwnKeysToGatewayRoutes: the playground sends a
// developer's own keys only (an administrator's any key, on the audit
// log), and says "Admitted" only when a gateway route admitted the key.
func TestPortalPlaygroundSendsOwnKeysToGatewayRoutes(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemo(t, false)
	alice, bob, admin := p.signIn(t, "alice"), p.signIn(t, "bob"), p.signIn(t, "admin")
	k := p.createKey(t, alice, "mine", "dev")
	try := func(ctx context.Context, key, path string) (status, explanation string) {
		t.Helper()
		p.open(t, ctx, "/portal/playground")
		tabDo(t, ctx, "filling the playground",
			chromedp.SetValue(chromedp.ID("service"), "echo"),
			chromedp.SetValue(chromedp.ID("method"), "GET"),
			chromedp.SetValue(chromedp.ID("path"), path),
		)
		if key != "" {
			tabDo(t, ctx, "pasting the key", chromedp.SendKeys(chromedp.ID("apikey"), key))
		}
		p.submit(t, ctx, `form[action="/portal/playground"] button[type=submit]`)
		return tabEval[string](t, ctx, `document.getElementById('result-status')?.textContent ?? 'none'`),
			tabEval[string](t, ctx, `document.getElementById('result-explanation')?.textContent ?? ''`)
	}
	if status, why := try(alice, k.secret, "/echo/hello"); status != "200" || !strings.Contains(why, "Admitted") {
		t.Errorf("alice with her key %s: %s %q, want 200 Admitted", k.id, status, why)
	}
	if status, why := try(bob, k.secret, "/echo/hello"); status == "200" || !strings.Contains(why, "not one of your keys") {
		t.Errorf("bob with alice's key %s: %s %q, want not sent: not one of his keys", k.id, status, why)
	}
	if status, why := try(admin, k.secret, "/echo/hello"); status != "200" || !strings.Contains(why, "Admitted") {
		t.Errorf("admin with alice's key %s: %s %q, want 200 Admitted", k.id, status, why)
	}
	audit := string(readFile(t, filepath.Join(dir, "audit.log")))
	if !strings.Contains(audit, `"event":"key.playground"`) || !strings.Contains(audit, `"actor":"portal:admin"`) {
		t.Errorf("the admin's use of key %s in the playground is not on the audit log", k.id)
	}
	if strings.Contains(audit, `"actor":"portal:bob"`) {
		t.Errorf("bob's refused try is on the audit log as his action")
	}

	// /echo is not under the demo's handle /echo/*: Caddy answers an empty
	// 200, and no gateway ran.
	for _, key := range []string{"", k.secret} {
		if status, why := try(alice, key, "/echo"); strings.Contains(why, "Admitted") || !strings.Contains(why, "reached no gateway route") {
			t.Errorf("GET /echo (key sent: %v): %s %q, want it said that no gateway route was reached", key != "", status, why)
		}
	}
}

// TestPortalProdKeyEditsWaitOnlyWhenWider: renaming an approved production
// key keeps it approved and working; a wider role waits for approval while
// the key keeps working with what it had, and applies once approved.
func TestPortalProdKeyEditsWaitOnlyWhenWider(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemo(t, false)
	alice, admin := p.signIn(t, "alice"), p.signIn(t, "admin")
	k := p.createKey(t, alice, "production app", "prod")
	p.open(t, admin, "/portal/admin")
	p.submit(t, admin, `button[aria-label="Approve key `+k.id+`"]`)
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Fatalf("approved key %s: %d %s/%s", k.id, r.status, r.code, r.reason)
	}

	p.open(t, alice, "/portal/keys/"+k.id)
	tabDo(t, alice, "renaming", chromedp.SetValue(chromedp.ID("name"), "production app (eu)"))
	p.submit(t, alice, `form[action="/portal/keys/`+k.id+`"] button[type=submit]`)
	if flash := p.alerts(t, alice); !strings.Contains(flash, "Saved") {
		t.Fatalf("renaming key %s: the page says %q", k.id, flash)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("key %s after a rename: %d %s/%s, want 200 (still approved)", k.id, r.status, r.code, r.reason)
	}

	// Wider: writer. It waits; the key works as a reader meanwhile.
	tabDo(t, alice, "choosing writer", chromedp.SetValue(chromedp.ID("role"), "writer"))
	p.submit(t, alice, `form[action="/portal/keys/`+k.id+`"] button[type=submit]`)
	if flash := p.alerts(t, alice); !strings.Contains(flash, "approval") {
		t.Errorf("asking for writer on key %s: the page says %q, want that it waits for approval", k.id, flash)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("key %s while writer waits: GET %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
	}
	if r := p.gateway(t, "POST", "/echo/hello", k.secret); r.status != 403 || r.reason != "method" {
		t.Errorf("key %s while writer waits: POST %d %s/%s, want 403 method (still a reader)", k.id, r.status, r.code, r.reason)
	}
	p.open(t, admin, "/portal/admin")
	if text := tabEval[string](t, admin, `document.querySelector('ul.pending')?.innerText ?? ''`); !strings.Contains(text, k.id) || !strings.Contains(text, "writer") {
		t.Errorf("the admin page does not list key %s's wider role as waiting: %q", k.id, text)
	}
	p.submit(t, admin, `button[aria-label="Approve key `+k.id+`"]`)
	if r := p.gateway(t, "POST", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("key %s after writer was approved: POST %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
	}
}
