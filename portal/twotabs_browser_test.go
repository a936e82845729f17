package portal_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestPortalTwoTabsDoNotUndoEachOther: a developer opens a key's page in
// two tabs. In the first they give it a daily quota of 50; in the second,
// opened before, they extend its expiry: the extension changes only the
// expiry, and the quota stays. The first tab, now stale, saves new
// permissions: refused, nothing saved, and the page says the key changed
// since it was opened and shows the key as it is now (the new quota and
// expiry in the form) to make the change again over. The same for limits
// saved from a tab opened before a permissions change.
func TestPortalTwoTabsDoNotUndoEachOther(t *testing.T) {
	p, dir := startPortalDemoWithin(t, false, 5*time.Minute, withLimits(t))
	one, two := p.signIn(t, "alice"), p.signIn(t, "alice")
	k := p.createExpiring(t, one, "two tabs", "10")
	keyPage := "/portal/keys/" + k.id
	save := `form[action="` + keyPage + `"] button[type=submit]`
	p.open(t, one, keyPage)
	p.open(t, two, keyPage)

	// Tab one: a daily quota of 50.
	tabDo(t, one, "setting the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "50"))
	p.submit(t, one, save)
	if rec := demoRecords(t, dir)[k.id]; rec.QuotaPerDay == nil || *rec.QuotaPerDay != 50 {
		t.Fatalf("key %s: quota %v after saving 50 in tab one; the page says: %s", k.id, rec.QuotaPerDay, p.alerts(t, one))
	}

	// Tab two, opened before: extend to 60 days. Only the expiry changes.
	tabDo(t, two, "choosing 60 days", chromedp.SetValue(chromedp.ID("extend_days"), "60"))
	p.submit(t, two, `form[action="`+keyPage+`/extend"] button[type=submit]`)
	rec := demoRecords(t, dir)[k.id]
	expires, _ := time.Parse(time.RFC3339, rec.ExpiresAt)
	if rec.QuotaPerDay == nil || *rec.QuotaPerDay != 50 || time.Until(expires) < 59*24*time.Hour {
		t.Fatalf("key %s after a stale tab's extension: quota %v, expires %s; want the quota of 50 kept and 60 days", k.id, rec.QuotaPerDay, rec.ExpiresAt)
	}

	// Tab one, now stale (opened before the extension): new permissions.
	p.open(t, one, keyPage)
	p.open(t, two, keyPage)
	tabDo(t, two, "narrowing the permissions", chromedp.SetValue(chromedp.ID("permissions"), "GET /echo/*"))
	p.submit(t, two, save)
	if got := demoRecords(t, dir)[k.id].Permissions; len(got) != 1 || got[0] != "GET /echo/*" {
		t.Fatalf("key %s: permissions %q after saving GET /echo/* in tab two; the page says: %s", k.id, got, p.alerts(t, two))
	}
	tabDo(t, one, "setting the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "40"))
	p.submit(t, one, save)
	after := demoRecords(t, dir)[k.id]
	if after.QuotaPerDay == nil || *after.QuotaPerDay != 50 || len(after.Permissions) != 1 {
		t.Errorf("key %s after a stale tab saved a quota of 40: quota %v, permissions %q; want nothing saved", k.id, after.QuotaPerDay, after.Permissions)
	}
	if msg := p.alerts(t, one); !strings.Contains(msg, "changed since you opened") || !strings.Contains(msg, "as it is now") {
		t.Errorf("the stale tab's save says %q, want that the key changed since it was opened and the page shows it as it is now", msg)
	}
	if quota, perms := tabEval[string](t, one, `document.getElementById('quota_per_day')?.value ?? ''`),
		tabEval[string](t, one, `document.getElementById('permissions')?.value ?? ''`); quota != "50" || strings.TrimSpace(perms) != "GET /echo/*" {
		t.Fatalf("the stale tab's answer shows quota %q and permissions %q, want the key as it is now: 50 and GET /echo/*", quota, perms)
	}
	// Saving again from the page as it is now works.
	tabDo(t, one, "setting the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "40"))
	p.submit(t, one, save)
	if rec := demoRecords(t, dir)[k.id]; rec.QuotaPerDay == nil || *rec.QuotaPerDay != 40 || len(rec.Permissions) != 1 {
		t.Errorf("key %s saved over the current state: quota %v, permissions %q; want 40 and the permissions kept", k.id, rec.QuotaPerDay, rec.Permissions)
	}
}
