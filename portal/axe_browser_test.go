package portal_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// axeViolation is one rule axe-core found broken on a page.
type axeViolation struct {
	ID      string   `json:"id"`
	Impact  string   `json:"impact"`
	Help    string   `json:"help"`
	Targets []string `json:"targets"`
}

// axeSource is axe-core from testdata/clients (npm ci there), or "" and a
// skip when it is missing.
func axeSource(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../testdata/clients/node_modules/axe-core/axe.min.js")
	if err != nil {
		if os.Getenv("APIKEY_REQUIRE_NODE") != "" {
			t.Fatalf("axe-core is missing (cd testdata/clients && npm ci): %v", err)
		}
		t.Skipf("axe-core is missing (cd testdata/clients && npm ci): %v", err)
	}
	return string(src)
}

// axeCheck runs axe-core on the tab's page (injected through DevTools, as
// the page's CSP allows no other script) and fails on every serious or
// critical violation, naming the rule and the elements.
func axeCheck(t *testing.T, ctx context.Context, axe, what string) {
	t.Helper()
	if !tabEval[bool](t, ctx, `typeof axe === 'object'`) {
		tabEval[bool](t, ctx, axe+"\n;true")
	}
	start := time.Now()
	found, err := chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](`axe.run(document, {resultTypes: ['violations']}).then(r =>
		r.violations.map(v => ({id: v.id, impact: v.impact || '', help: v.help, targets: v.nodes.map(n => n.target.join(' '))})))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: running axe-core: %v", what, err)
	}
	t.Logf("%s: axe-core took %v", what, time.Since(start).Round(time.Millisecond))
	for _, v := range found {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("%s: axe-core %s %s (%s) on %s", what, v.Impact, v.ID, v.Help, strings.Join(v.Targets, ", "))
		}
	}
}

// TestPortalPagesPassAxe: axe-core finds no serious or critical violation
// on any portal page (a developer's and an administrator's; forms, a key
// shown once and shown already, a playground answer, an error page), at
// desktop width and at 390 px.
func TestPortalPagesPassAxe(t *testing.T) {
	fullSuiteOnly(t)
	axe := axeSource(t)
	// axe-core takes seconds a page on a loaded machine.
	// With an LLM route and a Sign out link (the demo has limits in the forms
	// and described services in the catalog), and a team, so that the forms
	// offer owners and the lists a team.
	p, _ := startPortalDemoWithin(t, false, 8*time.Minute, withLimits(t), withSignOut(t), withOperatorTeam(t, "axe", "alice"))
	alice, admin := p.signIn(t, "alice"), p.signIn(t, "admin")
	for _, width := range []int{0, 390} {
		name := "desktop"
		if width != 0 {
			name = fmt.Sprintf("%d px", width)
		}
		t.Run(name, func(t *testing.T) {
			if width != 0 {
				phone(t, alice)
				phone(t, admin)
			}
			k := p.createKeyFor(t, alice, "axe "+name, "models")
			axeCheck(t, alice, axe, "the page showing a new key")
			tabDo(t, alice, "reloading it", chromedp.Reload())
			axeCheck(t, alice, axe, "the page saying a key was shown already")
			prod := p.createKey(t, alice, "axe prod "+name, "prod")
			team := p.createTeamKey(t, alice, "axe team "+name, "axe")
			p.open(t, alice, "/portal/playground")
			tabDo(t, alice, "filling the playground",
				chromedp.SetValue(chromedp.ID("service"), "echo"),
				chromedp.SetValue(chromedp.ID("path"), "/echo/hello"),
				chromedp.SendKeys(chromedp.ID("apikey"), k.secret))
			p.submit(t, alice, `form[action="/portal/playground"] button[type=submit]`)
			axeCheck(t, alice, axe, "the playground's answer")
			for _, pg := range []struct {
				ctx  context.Context
				path string
			}{
				{alice, "/portal/keys"}, {alice, "/portal/keys/new"}, {alice, "/portal/keys/" + k.id},
				{alice, "/portal/keys/" + prod.id}, {alice, "/portal/keys/" + k.id + "/revoke"},
				{alice, "/portal/usage"}, {alice, "/portal/usage?key=" + k.id}, {alice, "/portal/playground"}, {alice, "/portal/notifications"}, {alice, "/portal/nowhere"},
				{admin, "/portal/admin"}, {admin, "/portal/usage?all=1"}, {admin, "/portal/keys/" + prod.id},
				{alice, "/portal/catalog"}, {alice, "/portal/keys?q=axe&stopped=1&sort=name"}, {alice, "/portal/keys?q=nothing-matches"},
				{admin, "/portal/admin?owner=alice&type=prod&status=pending_approval"},
				{alice, "/portal/keys/" + team.id}, {alice, "/portal/keys?team=axe"}, {admin, "/portal/keys/" + team.id},
			} {
				p.open(t, pg.ctx, pg.path)
				axeCheck(t, pg.ctx, axe, pg.path)
			}
			p.open(t, alice, "/portal/keys/"+k.id+"/revoke")
			p.submit(t, alice, `form[action="/portal/keys/`+k.id+`/revoke"] button[type=submit]`)
			axeCheck(t, alice, axe, "the page saying a key was revoked")
		})
	}
}
