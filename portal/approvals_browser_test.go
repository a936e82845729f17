package portal_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// withAdmins makes the demo's administrators admin and bob.
func withAdmins(t *testing.T) func(string) string {
	return func(cfg string) string {
		if !strings.Contains(cfg, "\t\t\tadmins admin\n") {
			t.Fatal("the portal demo's admins line was not found")
		}
		return strings.Replace(cfg, "\t\t\tadmins admin\n", "\t\t\tadmins admin bob\n", 1)
	}
}

// TestPortalApprovalsShowTheGrantAndTakeAReason: the admin's list of keys
// waiting for approval shows the whole grant asked for (role, services,
// addresses, limits, expiry); the administrator approves or denies with a
// reason, which the developer sees on the key's page; an administrator's
// own production key waits for another administrator, and they cannot
// approve it themselves.
func TestPortalApprovalsShowTheGrantAndTakeAReason(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemoWithin(t, false, 5*time.Minute, withLimits(t), withAdmins(t))
	alice, admin, bob := p.signIn(t, "alice"), p.signIn(t, "admin"), p.signIn(t, "bob")

	// alice asks for a production key with an address range and a quota.
	p.open(t, alice, "/portal/keys/new")
	tabDo(t, alice, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), "payments"),
		chromedp.Click(chromedp.CSS(`input[name=type][value=prod]`)),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
		chromedp.SendKeys(chromedp.ID("allowed_ips"), "10.0.0.0/8"),
		chromedp.SendKeys(chromedp.ID("quota_per_day"), "50"),
		chromedp.SetValue(chromedp.ID("expiry_days"), "30"))
	p.submit(t, alice, `form[action="/portal/keys"] button[type=submit]`)
	denied := createdKey{id: tabEval[string](t, alice, `document.querySelector('.card.secret p code')?.textContent ?? ''`)}
	if denied.id == "" {
		t.Fatalf("no key was made: %s", p.alerts(t, alice))
	}
	expires := time.Now().Add(30 * 24 * time.Hour).UTC().Format("2006-01-02")

	p.open(t, admin, "/portal/admin")
	grant := tabEval[string](t, admin, `[...document.querySelectorAll('ul.pending li')].find(li => li.innerText.includes(`+jsQuote(denied.id)+`))?.querySelector('.whole-grant')?.textContent ?? ''`)
	for _, want := range []string{"role reader", "services echo", "from 10.0.0.0/8", "50 requests a day", "expires " + expires} {
		if !strings.Contains(grant, want) {
			t.Errorf("the pending list shows key %s's grant as %q, missing %q", denied.id, grant, want)
		}
	}
	tabDo(t, admin, "giving a reason", chromedp.SendKeys(chromedp.ID("reason-"+denied.id), "Use a dev key until the security review."))
	p.submit(t, admin, `button[aria-label="Deny key `+denied.id+`"]`)
	if flash := p.alerts(t, admin); !strings.Contains(flash, "Denied") {
		t.Fatalf("denying key %s: the page says %q", denied.id, flash)
	}
	if !demoRecords(t, dir)[denied.id].Revoked {
		t.Errorf("denied key %s was not revoked", denied.id)
	}
	p.open(t, alice, "/portal/keys/"+denied.id)
	if notice := tabEval[string](t, alice, `document.querySelector('.notice')?.textContent ?? ''`); !strings.Contains(notice, "admin, denied this key") ||
		!strings.Contains(notice, "Use a dev key until the security review.") {
		t.Errorf("alice's denied key %s's page says %q, want who denied it and why", denied.id, notice)
	}

	// Approved with a reason.
	approved := p.createKey(t, alice, "payments v2", "prod")
	p.open(t, admin, "/portal/admin")
	tabDo(t, admin, "giving a reason", chromedp.SendKeys(chromedp.ID("reason-"+approved.id), "Reviewed: fine for launch."))
	p.submit(t, admin, `button[aria-label="Approve key `+approved.id+`"]`)
	if r := p.gateway(t, "GET", "/echo/hello", approved.secret); r.status != 200 {
		t.Errorf("approved key %s: %d %s/%s", approved.id, r.status, r.code, r.reason)
	}
	p.open(t, alice, "/portal/keys/"+approved.id)
	if notice := tabEval[string](t, alice, `document.querySelector('.notice')?.textContent ?? ''`); !strings.Contains(notice, "admin, approved this key") ||
		!strings.Contains(notice, "Reviewed: fine for launch.") {
		t.Errorf("alice's approved key %s's page says %q, want who approved it and why", approved.id, notice)
	}

	// An administrator's own production key waits for the other one.
	own := p.createKey(t, admin, "admin's own", "prod")
	if r := p.gateway(t, "GET", "/echo/hello", own.secret); r.status != 403 || r.reason != "pending_approval" {
		t.Fatalf("the administrator's own prod key %s: %d %s/%s, want 403 pending_approval (bob approves it)", own.id, r.status, r.code, r.reason)
	}
	p.open(t, admin, "/portal/admin")
	if n := tabEval[int](t, admin, `document.querySelectorAll('button[aria-label="Approve key `+own.id+`"]').length`); n != 0 {
		t.Errorf("the administrator is offered the approval of their own key %s", own.id)
	}
	token := p.csrfToken(t, "admin")
	status, _, body := p.page(t, "admin", "POST", "/portal/admin/keys/"+own.id+"/approve", url.Values{"csrf": {token}}, token)
	if status != 409 || !strings.Contains(body, "is your own; another administrator (such as bob) approves it") {
		t.Errorf("the administrator approving their own key %s: %d %q, want 409 naming bob", own.id, status, firstAlert(body))
	}
	if r := p.gateway(t, "GET", "/echo/hello", own.secret); r.status != 403 {
		t.Fatalf("the administrator's own key %s works after they approved it themselves: %d", own.id, r.status)
	}
	p.open(t, bob, "/portal/admin")
	p.submit(t, bob, `button[aria-label="Approve key `+own.id+`"]`)
	if r := p.gateway(t, "GET", "/echo/hello", own.secret); r.status != 200 {
		t.Errorf("the administrator's key %s approved by bob: %d %s/%s, want 200", own.id, r.status, r.code, r.reason)
	}
}
