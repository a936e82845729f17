package portal_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/portal"
)

// listed is the ids the tab's key table lists, in order.
func listed(t *testing.T, ctx context.Context) []string {
	t.Helper()
	return tabEval[[]string](t, ctx, `[...document.querySelectorAll('table.keys tbody tr td:first-child a code')].map(c => c.textContent)`)
}

// find fills the key list's search form (the fields named, the others
// as they are) and sends it.
func (p *portalDemo) find(t *testing.T, ctx context.Context, fields map[string]string, stopped bool) {
	t.Helper()
	for name, value := range fields {
		if name == "q" || name == "owner" {
			tabEval[bool](t, ctx, `(f => { f.value = ''; f.focus(); return true })(document.querySelector('form.find [name=`+name+`]'))`)
			tabDo(t, ctx, "typing "+name, chromedp.SendKeys(chromedp.CSS(`form.find [name=`+name+`]`), value))
			continue
		}
		tabDo(t, ctx, "choosing "+name, chromedp.SetValue(chromedp.CSS(`form.find [name=`+name+`]`), value))
	}
	if tabEval[bool](t, ctx, `document.querySelector('form.find [name=stopped]').checked`) != stopped {
		tabDo(t, ctx, "ticking show revoked and expired", chromedp.Click(chromedp.CSS(`form.find [name=stopped]`)))
	}
	p.submit(t, ctx, `form.find button[type=submit]`)
}

// TestPortalFindsKeys: a developer finds their keys by name, id and hint,
// by status and type, sorted by name; revoked and expired keys are hidden
// until asked for; an administrator finds keys by owner, status and type.
// The forms are GET forms: every search is a link.
func TestPortalFindsKeys(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemo(t, false)
	alice, bob, admin := p.signIn(t, "alice"), p.signIn(t, "bob"), p.signIn(t, "admin")
	zulu := p.createKey(t, alice, "zulu batch job", "dev")
	// A record's created_at is in whole seconds, and keys made in the same
	// second are listed by id: alpha is made in a later second than zulu,
	// so that newest first is what orders them.
	madeBy := time.Now()
	gatewaytest.WaitUntil(t, "the second after zulu was made", 2*time.Second, func() bool { return time.Now().Unix() > madeBy.Unix() })
	alpha := p.createKey(t, alice, "alpha website", "prod")
	gone := p.createKey(t, alice, "mike old laptop", "dev")
	bobs := p.createKey(t, bob, "bob's tool", "dev")
	p.open(t, alice, "/portal/keys/"+gone.id+"/revoke")
	p.submit(t, alice, `form[action="/portal/keys/`+gone.id+`/revoke"] button[type=submit]`)

	p.open(t, alice, "/portal/keys")
	if got, want := listed(t, alice), []string{alpha.id, zulu.id}; !slices.Equal(got, want) {
		t.Errorf("My keys lists %v, want %v (newest first, the revoked key %s hidden)", got, want, gone.id)
	}
	if text := tabEval[string](t, alice, `document.querySelector('.found')?.innerText ?? ''`); !strings.Contains(text, "1 revoked or expired key is hidden") {
		t.Errorf("My keys does not say a revoked key is hidden: %q", text)
	}
	p.find(t, alice, nil, true)
	if got := listed(t, alice); !slices.Contains(got, gone.id) || len(got) != 3 {
		t.Errorf("with Show revoked and expired, My keys lists %v, want the three keys", got)
	}
	if q := tabEval[string](t, alice, `location.search`); q != "?q=&status=&type=&sort=created&stopped=1" {
		t.Errorf("the search is not a link with its query: %q", q)
	}

	for _, c := range []struct {
		what   string
		fields map[string]string
		want   []string
	}{
		{"a word of a name, in another case", map[string]string{"q": "WEBSITE"}, []string{alpha.id}},
		{"an id", map[string]string{"q": zulu.id}, []string{zulu.id}},
		{"a hint (the key's last characters)", map[string]string{"q": zulu.secret[len(zulu.secret)-4:]}, []string{zulu.id}},
		{"a masked key as the list shows it", map[string]string{"q": "DEV_API_…" + zulu.secret[len(zulu.secret)-4:]}, []string{zulu.id}},
		{"type prod", map[string]string{"type": "prod"}, []string{alpha.id}},
		{"status waiting for approval", map[string]string{"status": "pending_approval"}, []string{alpha.id}},
		{"status revoked", map[string]string{"status": "revoked"}, []string{gone.id}},
		{"sorted by name", map[string]string{"sort": "name"}, []string{alpha.id, zulu.id}},
		{"another developer's key", map[string]string{"q": bobs.id}, nil},
	} {
		p.open(t, alice, "/portal/keys")
		p.find(t, alice, c.fields, false)
		if got := listed(t, alice); !slices.Equal(got, c.want) {
			t.Errorf("searching My keys by %s lists %v, want %v", c.what, got, c.want)
		}
	}
	// A whole key typed into the search is not searched for, nor shown back.
	p.open(t, alice, "/portal/keys")
	p.find(t, alice, map[string]string{"q": zulu.secret}, false)
	if strings.Contains(tabEval[string](t, alice, `document.querySelector('form.find [name=q]').value`), "_API_") {
		t.Errorf("a whole key typed into the search (key %s) is shown back in the form", zulu.id)
	}
	if alert := p.alerts(t, alice); !strings.Contains(alert, "looked like a whole key") {
		t.Errorf("a whole key typed into the search is not explained: %q", alert)
	}

	// The administrator: by owner, status and type.
	for _, c := range []struct {
		what   string
		fields map[string]string
		want   []string
	}{
		{"owner alice", map[string]string{"owner": "alice"}, []string{alpha.id, zulu.id}},
		{"owner alice, revoked and expired shown", map[string]string{"owner": "alice"}, []string{alpha.id, gone.id, zulu.id}},
		{"type dev", map[string]string{"type": "dev"}, []string{bobs.id, zulu.id}},
		{"status waiting for approval", map[string]string{"status": "pending_approval"}, []string{alpha.id}},
	} {
		p.open(t, admin, "/portal/admin")
		p.find(t, admin, c.fields, strings.Contains(c.what, "shown"))
		got := listed(t, admin)
		slices.Sort(got)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("the admin page's keys of %s: %v, want %v", c.what, got, want)
		}
	}
}

// TestPortalAdminFindsKeysAtManyKeys: at 20,000 keys a filtered admin
// page is answered well under a second: each load looks through at most
// 5,000 records, says how far it looked, and links to where it stopped;
// following the links finds keys wherever their ids fall.
func TestPortalAdminFindsKeysAtManyKeys(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemo(t, false)
	writeManyKeys(t, dir, 20_000, "k_many00003", "k_many19998")
	admin := p.signIn(t, "admin")
	p.open(t, admin, "/portal/keys") // the first page read after the change reads the file

	// The page's speed is BenchmarkAdminPage's; here, the bound on its
	// work: no page looks through more than portal.AdminScan records, and it
	// says how many it did.
	took := func(what string) {
		t.Helper()
		ms := tabEval[float64](t, admin, `(e => e.responseStart - e.requestStart)(performance.getEntriesByType('navigation')[0])`)
		found := tabEval[string](t, admin, `document.querySelector('.found')?.innerText ?? ''`)
		t.Logf("%s at 20,000 keys: answered in %.0f ms: %q", what, ms, found)
		_, after, ok := strings.Cut(found, " of the ")
		scanned, err := strconv.Atoi(strings.ReplaceAll(strings.Fields(after + " x")[0], ",", ""))
		if !ok || err != nil {
			t.Errorf("%s at 20,000 keys: the page does not say how many keys it looked through: %q", what, found)
		} else if scanned > portal.AdminScan {
			t.Errorf("%s at 20,000 keys looked through %d records, want at most %d", what, scanned, portal.AdminScan)
		}
	}
	p.open(t, admin, "/portal/admin?owner=dev7")
	took("the keys of one owner")
	if got := listed(t, admin); len(got) != 67 {
		t.Errorf("owner dev7 has 67 of the 20,000 keys; the admin page lists %d", len(got))
	}
	p.open(t, admin, "/portal/admin?type=prod")
	took("the production keys")
	if got := listed(t, admin); !slices.Equal(got, []string{"k_many00003"}) {
		t.Errorf("the first page of production keys lists %v, want [k_many00003] (k_many19998 is further on)", got)
	}
	// A search for ids past the first 5,000: each page looks through the
	// next 5,000 and links on.
	p.open(t, admin, "/portal/admin?q=many1999")
	var found []string
	for loads := 1; ; loads++ {
		took("a search")
		found = append(found, listed(t, admin)...)
		next := tabEval[string](t, admin, `[...document.querySelectorAll('a.button')].find(a => a.textContent === 'Next page')?.getAttribute('href') ?? ''`)
		if next == "" {
			break
		}
		if loads == 5 {
			t.Fatalf("the search is not done after 5 pages (it found %v)", found)
		}
		if !strings.Contains(next, "q=many1999") {
			t.Fatalf("the Next page link %q does not keep the search", next)
		}
		p.open(t, admin, next)
	}
	if len(found) != 10 || found[0] != "k_many19990" {
		t.Errorf("following the search's pages found %v, want k_many19990 to k_many19999", found)
	}
}
