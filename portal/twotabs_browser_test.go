package portal_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestPortalTwoTabsDoNotUndoEachOther: a developer opens a key's page in
// two tabs. In the first they give it a daily quota of 50; in the second,
// opened before, they extend its expiry: the extension changes only the
// expiry, and the quota stays. The first tab, opened before the
// extension, saves new permissions: refused, nothing saved, and the page
// says the key changed since it was opened and shows the key as it is now
// (its quota in the form), over which the change saves. The second tab,
// opened before that, saves a quota of 40: refused the same way, then
// saved over the key as it is now.
func TestPortalTwoTabsDoNotUndoEachOther(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemoWithin(t, false, 5*time.Minute, withLimits(t))
	one, two := p.signIn(t, "alice"), p.signIn(t, "alice")
	k := p.createExpiring(t, one, "two tabs", "10")
	keyPage := "/portal/keys/" + k.id
	save := `form[action="` + keyPage + `"] button[type=submit]`
	p.open(t, one, keyPage)
	p.open(t, two, keyPage)
	record := func() (quota int64, perms []string, expires time.Time) {
		t.Helper()
		rec := demoRecords(t, dir)[k.id]
		if rec.QuotaPerDay != nil {
			quota = *rec.QuotaPerDay
		}
		expires, _ = time.Parse(time.RFC3339, rec.ExpiresAt)
		return quota, rec.Permissions, expires
	}
	// refused checks that the tab's save was refused, saying why, with the
	// key as it is now in the form.
	refused := func(ctx context.Context, tab string, wantQuota int64, wantPerms string) {
		t.Helper()
		if msg := p.alerts(t, ctx); !strings.Contains(msg, "changed since you opened") || !strings.Contains(msg, "as it is now") {
			t.Errorf("tab %s's stale save says %q, want that the key changed since it was opened and the page shows it as it is now", tab, msg)
		}
		quota := tabEval[string](t, ctx, `document.getElementById('quota_per_day')?.value ?? 'no form'`)
		perms := tabEval[string](t, ctx, `document.getElementById('permissions')?.value ?? 'no form'`)
		if quota != strconv.FormatInt(wantQuota, 10) || strings.TrimSpace(perms) != wantPerms {
			t.Fatalf("tab %s's refused save shows quota %q and permissions %q, want the key as it is now: %d and %q", tab, quota, perms, wantQuota, wantPerms)
		}
	}

	// Tab one: a daily quota of 50.
	tabDo(t, one, "setting the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "50"))
	p.submit(t, one, save)
	if quota, _, _ := record(); quota != 50 {
		t.Fatalf("key %s: quota %d after saving 50 in tab one; the page says: %s", k.id, quota, p.alerts(t, one))
	}

	// Tab two, opened before: extend to 60 days. Only the expiry changes.
	tabDo(t, two, "choosing 60 days", chromedp.SetValue(chromedp.ID("extend_days"), "60"))
	p.submit(t, two, `form[action="`+keyPage+`/extend"] button[type=submit]`)
	if quota, _, expires := record(); quota != 50 || time.Until(expires) < 59*24*time.Hour {
		t.Fatalf("key %s after a stale tab's extension: quota %d, expires %s; want the quota of 50 kept and 60 days", k.id, quota, expires)
	}

	// Tab one, opened before the extension: new permissions. Refused,
	// then saved over the key as it is now.
	tabDo(t, one, "narrowing the permissions", chromedp.SetValue(chromedp.ID("permissions"), "GET /echo/*"))
	p.submit(t, one, save)
	if quota, perms, expires := record(); quota != 50 || len(perms) != 0 || time.Until(expires) < 59*24*time.Hour {
		t.Errorf("key %s after a stale tab saved permissions: quota %d, permissions %q, expires %s; want nothing saved", k.id, quota, perms, expires)
	}
	refused(one, "one", 50, "")
	tabDo(t, one, "narrowing the permissions", chromedp.SetValue(chromedp.ID("permissions"), "GET /echo/*"))
	p.submit(t, one, save)
	if quota, perms, expires := record(); quota != 50 || len(perms) != 1 || perms[0] != "GET /echo/*" || time.Until(expires) < 59*24*time.Hour {
		t.Fatalf("key %s saved over the current state: quota %d, permissions %q, expires %s; want GET /echo/* and the rest kept: %s",
			k.id, quota, perms, expires, p.alerts(t, one))
	}

	// Tab two, opened before the permissions changed: a quota of 40.
	tabDo(t, two, "setting the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "40"))
	p.submit(t, two, save)
	if quota, perms, _ := record(); quota != 50 || len(perms) != 1 {
		t.Errorf("key %s after a stale tab saved a quota of 40: quota %d, permissions %q; want nothing saved", k.id, quota, perms)
	}
	refused(two, "two", 50, "GET /echo/*")
	tabDo(t, two, "setting the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "40"))
	p.submit(t, two, save)
	if quota, perms, _ := record(); quota != 40 || len(perms) != 1 {
		t.Errorf("key %s saved over the current state: quota %d, permissions %q; want 40 and the permissions kept", k.id, quota, perms)
	}
}
