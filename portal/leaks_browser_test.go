package portal_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// TestPortalShowsALeakedKey: a key a secret scanner reported (marked
// leaked and revoked in the store, as the apikey_leak_report endpoint
// does) shows as leaked in the owner's list, and its page says where it
// was found and what was done; one click rotates it: the new secret works
// at once, the leaked one never again.
func TestPortalShowsALeakedKey(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemo(t, false)
	alice := p.signIn(t, "alice")
	k := p.createKey(t, alice, "laptop", "dev")
	const where = "https://github.com/alice/app/blob/main/.env"
	store := keyfile.NewStore(filepath.Join(dir, "keys.json"))
	if _, err := keystore.MarkLeaked(context.Background(), store, k.id, keystore.Leak{At: time.Now(), URL: where, Source: "commit", Action: keystore.LeakRevoke, Secret: keystore.Sum(k.secret)}); err != nil {
		t.Fatal(err)
	}
	// Polled with a POST, which the reader key may not send: a 403 spends
	// nothing of the key's 20 a day, which a poll of GETs spent while a
	// loaded machine took its time to reload the key file (and the new
	// secret, the same key, then met 429).
	waitForGateway(t, p, k, "POST", 401, "revoked_key")

	p.open(t, alice, "/portal/keys")
	row := tabEval[string](t, alice, `[...document.querySelectorAll('table.keys tr')].find(r => r.innerText.includes('`+k.id+`'))?.innerText ?? ''`)
	if !strings.Contains(row, "leaked") {
		t.Errorf("my keys does not show key %s as leaked: %q", k.id, row)
	}
	p.open(t, alice, "/portal/keys/"+k.id)
	notice := tabEval[string](t, alice, `document.querySelector('section.leak')?.innerText ?? ''`)
	for _, want := range []string{where, "commit", "revoked"} {
		if !strings.Contains(notice, want) {
			t.Errorf("key %s's page does not say %q about the leak: %q", k.id, want, notice)
		}
	}
	if link := tabEval[string](t, alice, `document.querySelector('section.leak a.leak-url')?.href ?? ''`); link != where {
		t.Errorf("the leak's address is not linked: %q", link)
	}

	p.submit(t, alice, `section.leak form[action="/portal/keys/`+k.id+`/rotate"] button[type=submit]`)
	fresh := tabEval[string](t, alice, `document.getElementById('secret')?.value ?? ''`)
	if fresh == "" || fresh == k.secret {
		t.Fatalf("rotating leaked key %s showed no new secret; the page says: %s", k.id, p.alerts(t, alice))
	}
	if text := tabEval[string](t, alice, `document.querySelector('main')?.innerText ?? ''`); !strings.Contains(text, "stopped working at once") {
		t.Errorf("the new secret's page does not say the leaked one stopped: %.300q", text)
	}
	if r := p.gateway(t, "GET", "/echo/hello", fresh); r.status != 200 {
		t.Errorf("key %s's new secret: %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 401 {
		t.Errorf("key %s's leaked secret after the rotation: %d, want 401", k.id, r.status)
	}
	rec := demoRecords(t, dir)[k.id]
	if rec.LeakedAt != "" || rec.Revoked || len(rec.PreviousHashes) != 0 {
		t.Errorf("key %s after the rotation: leaked_at %q, revoked %v, %d old secrets; want none of them", k.id, rec.LeakedAt, rec.Revoked, len(rec.PreviousHashes))
	}
	p.open(t, alice, "/portal/keys/"+k.id)
	if n := tabEval[int](t, alice, `document.querySelectorAll('section.leak').length`); n != 0 {
		t.Errorf("key %s's page still shows the leak after the rotation", k.id)
	}
}

// waitForGateway polls the demo's gateway until the key gets status and
// code (a key file change is seen at once by the portal's own route, and
// within a poll by the others).
func waitForGateway(t *testing.T, p *portalDemo, k createdKey, method string, status int, code string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := p.gateway(t, method, "/echo/hello", k.secret)
		if r.status == status && r.code == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s: %d %s, want %d %s", k.id, r.status, r.code, status, code)
		}
		// The key file is looked at every 500 ms: a faster poll would only
		// spend the key's quota.
		time.Sleep(100 * time.Millisecond)
	}
}
