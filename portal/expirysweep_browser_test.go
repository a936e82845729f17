package portal_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/portal"
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

// TestPortalNotifiesOfExpiryOfUnusedKey: a key that expires in 3 days and
// is never used still gets its owner told, on the Notifications page and
// by a signed webhook delivery: the portal looks through its store for
// keys expiring within 14 days (every hour; here every 200 ms). The notice
// comes once: the sweeps after it, and a request of the key (which tells
// of a coming expiry too), tell nothing more; a key expiring in 30 days
// is not told of. Before the sweep, only a request of the key told.
func TestPortalNotifiesOfExpiryOfUnusedKey(t *testing.T) {
	t.Cleanup(portal.SetExpirySweepEvery(200 * time.Millisecond))
	p, _ := startPortalDemoWithLLM(t, false, withWebhooks)
	alice := p.signIn(t, "alice")
	recv := newWebhookReceiver(t)
	p.saveWebhook(t, alice, recv)

	unused := p.createExpiring(t, alice, "unused", "3")
	got := recv.waitForNotices(t, 1)
	if len(got) != 1 || got[0] != (receivedNotice{"key.expiring", unused.id, "", true}) {
		t.Fatalf("key %s, expiring in 3 days and never used: the receiver got %+v, want one signed key.expiring", unused.id, got)
	}
	p.open(t, alice, "/portal/notifications")
	if text := tabEval[string](t, alice, `document.querySelector('li.notice[data-event="key.expiring"]')?.innerText ?? ''`); !strings.Contains(text, unused.id) || !strings.Contains(text, "within 14 days") {
		t.Errorf("the page's expiry notice: %q, want key %s expiring within 14 days", text, unused.id)
	}

	// The request path's notice and the sweep's are one: using the key
	// now tells nothing more.
	if r := p.gateway(t, "GET", "/echo/hello", unused.secret); r.status != 200 {
		t.Fatalf("key %s: %d", unused.id, r.status)
	}
	// A key expiring in 30 days is not told of; one expiring in 5 days
	// is, by a later sweep, which looks through the first key again.
	later := p.createExpiring(t, alice, "later", "30")
	marker := p.createExpiring(t, alice, "marker", "5")
	got = recv.waitForNotices(t, 2)
	want := []receivedNotice{{"key.expiring", unused.id, "", true}, {"key.expiring", marker.id, "", true}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("after a use of key %s and more sweeps, and keys %s (30 days) and %s (5 days): the receiver got %+v, want %+v",
			unused.id, later.id, marker.id, got, want)
	}
}
