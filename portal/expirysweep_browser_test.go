package portal_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// createExpiring makes a development key for echo that expires in days,
// through the Create key form.
func (p *portalDemo) createExpiring(t *testing.T, ctx context.Context, name, days string) createdKey {
	t.Helper()
	p.open(t, ctx, "/portal/keys/new")
	tabDo(t, ctx, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
		chromedp.SetValue(chromedp.ID("expiry_days"), days),
	)
	p.submit(t, ctx, `form[action="/portal/keys"] button[type=submit]`)
	k := createdKey{
		secret: tabEval[string](t, ctx, `document.getElementById('secret')?.value ?? ''`),
		id:     tabEval[string](t, ctx, `document.querySelector('.card.secret p code')?.textContent ?? ''`),
	}
	if k.secret == "" || k.id == "" {
		t.Fatalf("no key was shown after Generate key; the page says: %s", p.alerts(t, ctx))
	}
	return k
}

// aliceKey is a development key of alice's for echo, expiring in days.
func aliceKey(t *testing.T, id string, days int) (keystore.Record, string) {
	t.Helper()
	secret, err := keystore.Generate(keystore.Dev)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	return keystore.Record{ID: id, Name: id, Hash: keystore.Sum(secret).Encode(), Type: "dev", Role: "reader", Services: []string{"echo"},
		Owner: "alice", CreatedAt: now.Add(-80 * 24 * time.Hour).Format(time.RFC3339), Hint: keystore.HintOf(secret),
		ExpiresAt: now.Add(time.Duration(days) * 24 * time.Hour).Format(time.RFC3339)}, secret
}

// TestPortalNotifiesOfExpiryOfUnusedKey: a key of alice's that expires in
// 3 days and that nobody used still gets her told, by a signed webhook
// delivery and on her Notifications page: the portal looks through its
// store for keys expiring within 14 days when it starts (and every hour).
// A key expiring in 30 days is not told of. The notice comes once: using
// the key afterwards (a request of a key expiring soon tells too) tells
// nothing more, while a key created later, expiring in 5 days, is told of
// at its first use. Before the sweep, only a request of the key told.
func TestPortalNotifiesOfExpiryOfUnusedKey(t *testing.T) {
	fullSuiteOnly(t)
	recv := newWebhookReceiver(t)
	recv.secret = "whsec_" + strings.Repeat("5eed", 16)
	// The operator's key file holds the keys before the portal starts, and
	// alice set her webhook on an earlier run.
	own := t.TempDir()
	unused, unusedSecret := aliceKey(t, "k_unused", 3)
	later, _ := aliceKey(t, "k_later", 30)
	keys, _ := json.Marshal(map[string]any{"keys": []keystore.Record{unused, later}})
	hooks, _ := json.Marshal(map[string]any{"alice": map[string]string{"url": recv.URL + "/hook", "secret": recv.secret}})
	for name, data := range map[string][]byte{"keys.json": keys, "webhooks.json": hooks} {
		if err := os.WriteFile(filepath.Join(own, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := startPortalDemoWithin(t, false, 5*time.Minute, func(cfg string) string {
		if !strings.Contains(cfg, "\t\t\tapprove_prod\n") {
			t.Fatal("the portal demo's approve_prod line was not found")
		}
		cfg = strings.Replace(cfg, "\t\t\tapprove_prod\n", "\t\t\tapprove_prod\n\t\t\twebhooks_loopback\n\t\t\twebhooks_file "+own+"/webhooks.json\n", 1)
		return strings.ReplaceAll(cfg, "{$APIKEY_DEMO_DIR:/tmp/apikey-portal-demo}", own)
	})
	alice := p.signIn(t, "alice")

	got := recv.waitForNotices(t, 1)
	if len(got) != 1 || got[0] != (receivedNotice{"key.expiring", unused.ID, "", true}) {
		t.Fatalf("key %s, expiring in 3 days and never used: the receiver got %+v, want one signed key.expiring", unused.ID, got)
	}
	p.open(t, alice, "/portal/notifications")
	if text := tabEval[string](t, alice, `document.querySelector('li.notice[data-event="key.expiring"]')?.innerText ?? ''`); !strings.Contains(text, unused.ID) || !strings.Contains(text, "within 14 days") {
		t.Errorf("the page's expiry notice: %q, want key %s expiring within 14 days", text, unused.ID)
	}

	// The request path's notice and the sweep's are one: using the key
	// now tells nothing more; a key created now and used is told of, after.
	if r := p.gateway(t, "GET", "/echo/hello", unusedSecret); r.status != 200 {
		t.Fatalf("key %s: %d", unused.ID, r.status)
	}
	marker := p.createExpiring(t, alice, "marker", "5")
	if r := p.gateway(t, "GET", "/echo/hello", marker.secret); r.status != 200 {
		t.Fatalf("key %s: %d", marker.id, r.status)
	}
	got = recv.waitForNotices(t, 2)
	want := []receivedNotice{{"key.expiring", unused.ID, "", true}, {"key.expiring", marker.id, "", true}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("after a use of key %s, and key %s (5 days) made and used: the receiver got %+v, want %+v (nothing of %s, 30 days)",
			unused.ID, marker.id, got, want, later.ID)
	}
}
