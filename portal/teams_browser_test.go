package portal_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// teamsIdP stands for an identity provider behind forward_auth, as
// oauth2-proxy is: it checks the demo users' passwords and answers with
// X-Auth-Request-User and X-Auth-Request-Groups, which forward_auth copies
// onto the request to the portal. Who is in which group may change while
// the test runs, as in a directory.
type teamsIdP struct {
	mu     sync.Mutex
	groups map[string]string
}

func (idp *teamsIdP) set(user, groups string) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.groups[user] = groups
}

func (idp *teamsIdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, password, ok := r.BasicAuth()
	if !ok || demoPasswords[user] == "" || demoPasswords[user] != password {
		w.Header().Set("WWW-Authenticate", `Basic realm="demo"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	idp.mu.Lock()
	groups := idp.groups[user]
	idp.mu.Unlock()
	w.Header().Set("X-Auth-Request-User", user)
	w.Header().Set("X-Auth-Request-Groups", groups)
}

// startIdP serves idp on a bound loopback port, until the test ends.
func startIdP(t *testing.T, idp http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: idp, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// withTeams puts forward_auth to the identity provider at idp in front of
// the demo's portal instead of basic_auth, takes the visitor's teams from
// its groups header, and defines the team ops (bob and carol).
func withTeams(t *testing.T, idp string) func(string) string {
	return func(cfg string) string {
		start := strings.Index(cfg, "\t\tbasic_auth {\n")
		end := strings.Index(cfg, "\t\tapikey_portal {\n")
		const policy = "\t\t\tadmins admin\n"
		if start < 0 || end < start || !strings.Contains(cfg, policy) {
			t.Fatal("the portal demo's basic_auth, apikey_portal or admins was not found")
		}
		auth := "\t\tforward_auth " + idp + " {\n\t\t\turi /auth\n\t\t\tcopy_headers X-Auth-Request-User X-Auth-Request-Groups\n\t\t}\n"
		cfg = cfg[:start] + auth + cfg[end:]
		return strings.Replace(cfg, policy, policy+"\t\t\tuser {http.request.header.X-Auth-Request-User}\n"+
			"\t\t\tgroups {http.request.header.X-Auth-Request-Groups}\n\t\t\tteam ops bob carol\n", 1)
	}
}

// withOperatorTeam defines team in the demo's portal, with members.
func withOperatorTeam(t *testing.T, team string, members ...string) func(string) string {
	return func(cfg string) string {
		const policy = "\t\t\tadmins admin\n"
		if !strings.Contains(cfg, policy) {
			t.Fatal("the portal demo's admins was not found")
		}
		return strings.Replace(cfg, policy, policy+"\t\t\tteam "+team+" "+strings.Join(members, " ")+"\n", 1)
	}
}

// createTeamKey creates a dev key for the echo service owned by team (""
// for the visitor), as the Create key form offers.
func (p *portalDemo) createTeamKey(t *testing.T, ctx context.Context, name, team string) createdKey {
	t.Helper()
	p.open(t, ctx, "/portal/keys/new")
	tabDo(t, ctx, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.Click(chromedp.CSS(`input[name=team][value=`+jsQuote(team)+`]`)),
		chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
	)
	p.submit(t, ctx, `form[action="/portal/keys"] button[type=submit]`)
	k := p.shownKey(t, ctx)
	if k.secret == "" || k.id == "" {
		t.Fatalf("no key was shown after Generate key for team %q; the page says: %s", team, p.alerts(t, ctx))
	}
	return k
}

// teamPage requests a portal page from Go as user, through the identity
// provider; a POST sends form with user's form token.
func (p *portalDemo) teamPage(t *testing.T, user, method, path string, form url.Values) (int, string) {
	t.Helper()
	var token string
	if method == http.MethodPost {
		token = p.csrfToken(t, user)
		form.Set("csrf", token)
	}
	// A client's own groups header: forward_auth replaces it with the
	// identity provider's.
	status, _, body := p.page(t, user, method, path, form, token, "X-Auth-Request-Groups", "ml,ops")
	return status, body
}

// listed reports whether the visitor's My keys page lists key id.
func (p *portalDemo) listed(t *testing.T, ctx context.Context, query, id string) bool {
	t.Helper()
	p.open(t, ctx, "/portal/keys"+query)
	return tabEval[bool](t, ctx, `[...document.querySelectorAll('table.keys tbody tr a code')].some(c => c.textContent === `+jsQuote(id)+`)`)
}

// TestPortalTeamKeys: keys owned by a team. alice and bob are in the
// identity provider's group ml (forward_auth's X-Auth-Request-Groups);
// alice creates a key for ml; bob sees it and rotates, pauses and resumes
// it; carol, in no such group, gets 404 on its pages and every change,
// and cannot make a key for ml. An administrator's pause is told to the
// members. When alice leaves ml she no longer sees
// the key, which keeps working at the gateway, and bob revokes it. The
// operator's team ops (bob, carol) works the same way. On a key file and
// on Redis; under -short, on a key file without the operator's team,
// pause/resume and the notices.
func TestPortalTeamKeys(t *testing.T) {
	for _, variant := range []struct {
		name  string
		redis bool
	}{{"key file", false}, {"redis", true}} {
		if variant.redis && testing.Short() {
			continue // the Redis store's team index is checked by its store contract
		}
		t.Run(variant.name, func(t *testing.T) { teamKeys(t, variant.redis) })
	}
}

func teamKeys(t *testing.T, redis bool) {
	idp := &teamsIdP{groups: map[string]string{"alice": "ml", "bob": "research, ml", "carol": "", "admin": ""}}
	addr := startIdP(t, idp)
	p, dir := startPortalDemoWithin(t, redis, 5*time.Minute, withTeams(t, addr))
	alice := p.b.User("alice", demoPasswords["alice"])
	bob := p.b.User("bob", demoPasswords["bob"])
	carol := p.b.User("carol", demoPasswords["carol"])
	for who, ctx := range map[string]context.Context{"alice": alice, "bob": bob, "carol": carol} {
		p.console.watch(t, who, ctx)
	}

	// alice is offered her group's team as the new key's owner; carol
	// only the operator's team she is listed in; admin, in no team, is
	// not asked.
	for who, want := range map[string]string{"alice": "Me|Team ml", "carol": "Me|Team ops"} {
		ctx := map[string]context.Context{"alice": alice, "carol": carol}[who]
		p.open(t, ctx, "/portal/keys/new")
		if owners := tabEval[string](t, ctx, `[...document.querySelectorAll('fieldset.owners label')].map(l => l.textContent.trim()).join('|')`); owners != want {
			t.Errorf("%s's Create key form offers the owners %q, want %s", who, owners, want)
		}
	}
	if _, body := p.teamPage(t, "admin", "GET", "/portal/keys/new", nil); strings.Contains(body, `name="team"`) {
		t.Error("admin, in no team, is offered owners")
	}

	k := p.createTeamKey(t, alice, "ml pipeline", "ml")
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Fatalf("team key %s: %d %s, want 200", k.id, r.status, r.code)
	}

	// bob sees it, as team ml's, and manages it.
	if !p.listed(t, bob, "", k.id) {
		t.Fatalf("bob's My keys does not list team ml's key %s", k.id)
	}
	if mark := tabEval[string](t, bob, `[...document.querySelectorAll('table.keys tbody tr')].find(r => r.querySelector('a code')?.textContent === `+jsQuote(k.id)+`)?.querySelector('.team')?.textContent ?? ''`); mark != "team ml" {
		t.Errorf("bob's My keys marks team ml's key %s %q, want team ml", k.id, mark)
	}
	if !p.listed(t, bob, "?team=ml", k.id) || p.listed(t, bob, "?team=!me", k.id) {
		t.Errorf("bob's My keys filtered by owner: team ml's key %s is not under team ml only", k.id)
	}
	p.open(t, bob, "/portal/keys/"+k.id)
	if owner := tabEval[string](t, bob, `document.querySelector('dd.owner')?.textContent ?? ''`); !strings.Contains(owner, "team ml") {
		t.Errorf("key %s's page says its owner is %q, want team ml", k.id, owner)
	}
	p.submit(t, bob, `form[action="/portal/keys/`+k.id+`/rotate"] button[type=submit]`)
	fresh := tabEval[string](t, bob, `document.getElementById('secret')?.value ?? ''`)
	if fresh == "" || fresh == k.secret {
		t.Fatalf("bob rotating team key %s showed no new secret; the page says: %s", k.id, p.alerts(t, bob))
	}
	k.secret = fresh
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("team key %s's new secret from bob: %d %s, want 200", k.id, r.status, r.code)
	}
	if !testing.Short() {
		p.open(t, bob, "/portal/keys/"+k.id)
		p.submit(t, bob, `form[action="/portal/keys/`+k.id+`/pause"] button[type=submit]`)
		if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 403 || r.reason != "paused" {
			t.Errorf("team key %s paused by bob: %d %s/%s, want 403 paused", k.id, r.status, r.code, r.reason)
		}
		p.submit(t, bob, `form[action="/portal/keys/`+k.id+`/resume"] button[type=submit]`)
		if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
			t.Errorf("team key %s resumed by bob: %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
		}
	}

	// carol, not in ml (whatever groups header she sends herself), gets
	// what she gets for a key that does not exist.
	notYours := func(who, id string) {
		t.Helper()
		for _, c := range []struct {
			method, path string
			form         url.Values
		}{
			{"GET", "/portal/keys/" + id, nil},
			{"GET", "/portal/keys/" + id + "/revoke", nil},
			{"POST", "/portal/keys/" + id + "/rotate", url.Values{}},
			{"POST", "/portal/keys/" + id + "/pause", url.Values{}},
			{"POST", "/portal/keys/" + id + "/extend", url.Values{"days": {"30"}}},
			{"POST", "/portal/keys/" + id + "/revoke", url.Values{}},
			{"POST", "/portal/keys/" + id, url.Values{"name": {"taken"}, "role": {"reader"}, "services": {"echo"}}},
		} {
			if status, body := p.teamPage(t, who, c.method, c.path, c.form); status != 404 || !strings.Contains(body, "You have no key with this id.") {
				t.Errorf("%s: %s %s answered %d (%s), want 404: no key with this id", who, c.method, c.path, status, firstAlert(body))
			}
		}
	}
	notYours("carol", k.id)
	if p.listed(t, carol, "", k.id) {
		t.Errorf("carol's My keys lists team ml's key %s", k.id)
	}
	for _, path := range []string{"/portal/keys.csv", "/portal/usage"} {
		if _, body := p.teamPage(t, "carol", "GET", path, nil); strings.Contains(body, k.id) {
			t.Errorf("carol's %s names team ml's key %s", path, k.id)
		}
	}
	if status, body := p.teamPage(t, "carol", "POST", "/portal/keys", url.Values{"team": {"ml"}, "name": {"sneaky"}, "type": {"dev"},
		"role": {"reader"}, "services": {"echo"}}); status != 403 || !strings.Contains(body, "not a member") {
		t.Errorf("carol creating a key for team ml: %d (%s), want 403 not a member", status, firstAlert(body))
	}
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 || r.header.Get("Deprecation") != "" {
		t.Errorf("after carol's attempts, team key %s answers %d (Deprecation %q), want 200 unchanged", k.id, r.status, r.header.Get("Deprecation"))
	}

	if !testing.Short() {
		// An administrator (in no team) pauses the team's key: every
		// member is told, on their Notifications page and the key's page;
		// carol is not.
		admin := p.b.User("admin", demoPasswords["admin"])
		p.console.watch(t, "admin", admin)
		p.open(t, admin, "/portal/keys/"+k.id)
		p.submit(t, admin, `form[action="/portal/keys/`+k.id+`/pause"] button[type=submit]`)
		for who, ctx := range map[string]context.Context{"alice": alice, "bob": bob} {
			p.open(t, ctx, "/portal/notifications")
			if text := tabEval[string](t, ctx, `[...document.querySelectorAll('li.notice[data-event="key.paused"]')].map(li => li.textContent).join('|')`); !strings.Contains(text, k.id) {
				t.Errorf("%s, in team ml, is not told on Notifications that admin paused its key %s (notices: %q)", who, k.id, text)
			}
			p.open(t, ctx, "/portal/keys/"+k.id)
			if notice := tabEval[string](t, ctx, `document.querySelector('.alert.notice')?.textContent ?? ''`); !strings.Contains(notice, "paused") {
				t.Errorf("%s: team key %s's page does not say admin paused it (%q)", who, k.id, notice)
			}
		}
		if _, body := p.teamPage(t, "carol", "GET", "/portal/notifications", nil); strings.Contains(body, k.id) {
			t.Errorf("carol, out of team ml, is told of its key %s", k.id)
		}
		// The admin page lists the key with its team, filters by team,
		// and says which team a waiting production key is for.
		p.open(t, admin, "/portal/admin?team=ml")
		if row := tabEval[string](t, admin, `[...document.querySelectorAll('table.keys tbody tr')].map(tr => tr.innerText).join('|')`); !strings.Contains(row, k.id) || !strings.Contains(row, "team ml") {
			t.Errorf("the admin page filtered by team ml lists %q, want key %s of team ml", row, k.id)
		}
		if status, body := p.teamPage(t, "alice", "POST", "/portal/keys", url.Values{"team": {"ml"}, "name": {"ml prod"}, "type": {"prod"},
			"role": {"reader"}, "services": {"echo"}}); status >= 400 {
			t.Fatalf("alice creating a prod key for team ml: %d (%s)", status, firstAlert(body))
		}
		p.open(t, admin, "/portal/admin")
		if waiting := tabEval[string](t, admin, `document.querySelector('ul.pending')?.innerText ?? ''`); !strings.Contains(waiting, "by alice for team ml") {
			t.Errorf("the admin page's waiting list does not say the prod key is alice's for team ml: %q", waiting)
		}
		p.open(t, admin, "/portal/keys/"+k.id)
		p.submit(t, admin, `form[action="/portal/keys/`+k.id+`/resume"] button[type=submit]`)
		if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
			t.Errorf("team key %s resumed by admin: %d %s/%s, want 200", k.id, r.status, r.code, r.reason)
		}
	}

	// A new secret not yet shown when its maker leaves the team is the
	// team's: alice rotates the key without opening the page that shows
	// the new secret, leaves ml, and that page answers her 404.
	p.open(t, alice, "/portal/keys/"+k.id)
	if got := tabAwait[string](t, alice, `(async f => (await fetch(f.action, {method: 'POST', body: new FormData(f), redirect: 'manual'})).type)(document.querySelector('form[action="/portal/keys/`+k.id+`/rotate"]'))`); got != "opaqueredirect" {
		t.Fatalf("alice's rotation of team key %s: %q, want a redirect to its secret", k.id, got)
	}

	// alice leaves ml: the key is no longer hers to see; it keeps working,
	// and bob still manages it.
	idp.set("alice", "")
	if got := tabAwait[string](t, alice, `(async () => { const r = await fetch('/portal/keys/`+k.id+`/secret'); const text = await r.text(); return r.status + (/(DEV|PROD)_API_[A-Za-z0-9]{20}/.test(text) ? ' with a secret' : '') })()`); got != "404" {
		t.Errorf("alice, out of team ml, opening the new secret of its key %s: %s, want 404", k.id, got)
	}
	if p.listed(t, alice, "?stopped=1", k.id) {
		t.Errorf("alice, out of team ml, still sees its key %s on My keys", k.id)
	}
	notYours("alice", k.id)
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
		t.Errorf("team key %s after its maker left the team: %d %s, want 200", k.id, r.status, r.code)
	}
	p.open(t, bob, "/portal/keys/"+k.id)
	p.submit(t, bob, `a.button.danger[href="/portal/keys/`+k.id+`/revoke"]`)
	p.submit(t, bob, `form[action="/portal/keys/`+k.id+`/revoke"] button[type=submit]`)
	if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 401 || r.code != "revoked_key" {
		t.Errorf("team key %s revoked by bob: %d %s, want 401 revoked_key", k.id, r.status, r.code)
	}

	// The audit log says who did what to the team's key.
	audit, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"event":"key.created"`, `"event":"key.rotated"`, `"event":"key.revoked"`} {
		actor := map[bool]string{true: "portal:alice", false: "portal:bob"}[strings.Contains(want, "created")]
		if !auditHas(string(audit), k.id, want, `"actor":"`+actor+`"`) {
			t.Errorf("the audit log has no %s entry for team key %s by %s", want, k.id, actor)
		}
	}

	if testing.Short() {
		return
	}
	// The operator's team ops: carol makes a key for it; bob, listed too,
	// sees it; alice does not.
	ops := p.createTeamKey(t, carol, "ops cron", "ops")
	if !p.listed(t, bob, "?team=ops", ops.id) {
		t.Errorf("bob, in the operator's team ops, does not see its key %s", ops.id)
	}
	notYours("alice", ops.id)
	if r := p.gateway(t, "GET", "/echo/hello", ops.secret); r.status != 200 {
		t.Errorf("team ops's key %s: %d %s, want 200", ops.id, r.status, r.code)
	}
}

// auditHas reports whether one line of the audit log names key id and
// holds every one of parts.
func auditHas(log, id string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, fmt.Sprintf(`"key_id":%q`, id)) {
			continue
		}
		all := true
		for _, part := range parts {
			all = all && strings.Contains(line, part)
		}
		if all {
			return true
		}
	}
	return false
}
