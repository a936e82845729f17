package portal_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// changeDemoRecord changes one record of the demo's key file, as an
// operator (or time) would, and waits for nothing: the caller polls.
func changeDemoRecord(t *testing.T, dir, id string, change func(*keystore.Record)) {
	t.Helper()
	recs := demoRecords(t, dir)
	rec, ok := recs[id]
	if !ok {
		t.Fatalf("no key %s in the key file", id)
	}
	change(&rec)
	recs[id] = rec
	all := make([]keystore.Record, 0, len(recs))
	for _, r := range recs {
		all = append(all, r)
	}
	replaceDemoKeys(t, dir, all)
}

// TestPortalExtendsAKeysExpiry: a developer gives a key that expires soon
// a later expiry from its page, within the policy's 90 days, and the same
// secret keeps working; a longer one is refused naming the field; an
// expired key is not offered the form, and a crafted extension of it is
// refused.
func TestPortalExtendsAKeysExpiry(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemo(t, false)
	alice := p.signIn(t, "alice")
	p.open(t, alice, "/portal/keys/new")
	tabDo(t, alice, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), "short lived"),
		chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
		chromedp.SetValue(chromedp.ID("expiry_days"), "3"))
	p.submit(t, alice, `form[action="/portal/keys"] button[type=submit]`)
	k := createdKey{secret: tabEval[string](t, alice, `document.getElementById('secret')?.value ?? ''`),
		id: tabEval[string](t, alice, `document.querySelector('.card.secret p code')?.textContent ?? ''`)}
	if k.id == "" {
		t.Fatalf("no key was made: %s", p.alerts(t, alice))
	}
	expires := func() time.Time {
		t.Helper()
		at, err := time.Parse(time.RFC3339, demoRecords(t, dir)[k.id].ExpiresAt)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	if left := time.Until(expires()); left > 3*24*time.Hour || left < 3*24*time.Hour-time.Hour {
		t.Fatalf("key %s expires in %v, want 3 days", k.id, left)
	}
	hash := demoRecords(t, dir)[k.id].Hash

	p.open(t, alice, "/portal/keys/"+k.id)
	if status := tabEval[string](t, alice, `document.querySelector('dl.facts .status')?.textContent ?? ''`); status != "expiring soon" {
		t.Errorf("key %s, 3 days from its expiry, is shown %q, want expiring soon", k.id, status)
	}
	if n := tabEval[int](t, alice, `document.querySelectorAll('form[action$="/extend"] #extend_days').length`); n != 1 {
		t.Fatalf("key %s's page offers no extension", k.id)
	}
	tabDo(t, alice, "choosing 30 days", chromedp.SetValue(chromedp.ID("extend_days"), "30"))
	p.submit(t, alice, `form[action="/portal/keys/`+k.id+`/extend"] button[type=submit]`)
	if flash := p.alerts(t, alice); !strings.Contains(flash, "Extended") {
		t.Fatalf("extending key %s: the page says %q", k.id, flash)
	}
	if left := time.Until(expires()); left > 30*24*time.Hour || left < 30*24*time.Hour-time.Hour {
		t.Errorf("after extending key %s by 30 days it expires in %v", k.id, left)
	}
	if status := tabEval[string](t, alice, `document.querySelector('dl.facts .status')?.textContent ?? ''`); status != "active" {
		t.Errorf("extended key %s is shown %q, want active", k.id, status)
	}
	if rec := demoRecords(t, dir)[k.id]; rec.Hash != hash || len(rec.PreviousHashes) != 0 {
		t.Errorf("extending key %s rotated it", k.id)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("key %s after its extension: %d %s, want 200 with the same secret", k.id, r.status, r.code)
	}

	// Beyond the policy: refused, naming the field and the bound.
	before := expires()
	token := p.csrfToken(t, "alice")
	status, _, body := p.page(t, "alice", "POST", "/portal/keys/"+k.id+"/extend", url.Values{"csrf": {token}, "days": {"91"}}, token)
	if msg := firstAlert(body); status != 400 || !strings.Contains(body, "days:") || !strings.Contains(body, "from 1 to 90") {
		t.Errorf("extending key %s by 91 days: %d %q, want 400 naming days and 90", k.id, status, msg)
	}
	if !expires().Equal(before) {
		t.Errorf("a refused extension changed key %s's expiry", k.id)
	}
	// Another developer's key: as if it did not exist.
	bobToken := p.csrfToken(t, "bob")
	if status, _, _ := p.page(t, "bob", "POST", "/portal/keys/"+k.id+"/extend", url.Values{"csrf": {bobToken}, "days": {"90"}}, bobToken); status != 404 {
		t.Errorf("bob extending alice's key %s: %d, want 404", k.id, status)
	}

	// Expired: no form, and no extension.
	changeDemoRecord(t, dir, k.id, func(r *keystore.Record) {
		r.ExpiresAt = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	})
	waitForGateway(t, p, k, "GET", 401, "expired_key")
	p.open(t, alice, "/portal/keys/"+k.id)
	if n := tabEval[int](t, alice, `document.querySelectorAll('form[action$="/extend"]').length`); n != 0 {
		t.Errorf("expired key %s's page offers an extension", k.id)
	}
	status, _, body = p.page(t, "alice", "POST", "/portal/keys/"+k.id+"/extend", url.Values{"csrf": {token}, "days": {"30"}}, token)
	if status != 409 || !strings.Contains(body, "expired key cannot be extended") {
		t.Errorf("extending expired key %s: %d %q, want 409 saying an expired key cannot be extended", k.id, status, firstAlert(body))
	}
	waitForGateway(t, p, k, "GET", 401, "expired_key")
}
