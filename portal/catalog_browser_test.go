package portal_test

import (
	"strings"
	"testing"
	"time"
)

// withSignOut gives the demo's portal a sign-out URL.
func withSignOut(t *testing.T) func(string) string {
	return func(cfg string) string {
		const policy = "\t\t\tmax_keys 5\n"
		if !strings.Contains(cfg, policy) {
			t.Fatal("the portal demo's max_keys was not found")
		}
		return strings.Replace(cfg, policy, policy+"\t\t\tlogout_url /oauth2/sign_out\n", 1)
	}
}

// TestPortalCatalogAndSignOut: with logout_url, every page has a Sign
// out link to it; the API catalog lists each service a key may be given,
// with its description, an example path, how its route reads the key and
// a link to its docs.
func TestPortalCatalogAndSignOut(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemoWithin(t, false, 5*time.Minute, withSignOut(t))
	alice := p.signIn(t, "alice")
	for _, path := range []string{"/portal/keys", "/portal/usage"} {
		p.open(t, alice, path)
		if href := tabEval[string](t, alice, `[...document.querySelectorAll('header a')].find(a => a.textContent === 'Sign out')?.getAttribute('href') ?? ''`); href != "/oauth2/sign_out" {
			t.Errorf("%s: the Sign out link goes to %q, want /oauth2/sign_out", path, href)
		}
	}
	p.open(t, alice, "/portal/keys")
	p.submit(t, alice, `nav a[href="/portal/catalog"]`)
	type service struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Example     string `json:"example"`
		Docs        string `json:"docs"`
		Facts       string `json:"facts"`
	}
	got := tabEval[[]service](t, alice, `[...document.querySelectorAll('.catalog .service')].map(li => ({
		name: li.querySelector('h2').textContent, description: li.querySelector('.description')?.textContent ?? '',
		example: li.querySelector('dd code')?.textContent ?? '', docs: li.querySelector('a.docs')?.href ?? '',
		facts: li.querySelector('dl').innerText}))`)
	if len(got) != 2 || got[0].Name != "echo" || got[1].Name != "models" {
		t.Fatalf("the catalog lists %+v, want echo and models", got)
	}
	// As the demo describes them.
	if got[0].Description != "Says hello, and which key you used: a demo service Caddy answers itself." ||
		got[0].Docs != "https://github.com/moodmnky/caddy-apikey/blob/main/docs/portal.md" ||
		got[0].Example != "/echo/hello" || !strings.Contains(got[0].Facts, "Authorization: Bearer <key>") {
		t.Errorf("the catalog shows echo as %+v", got[0])
	}
	if got[1].Description != "Lists the models an LLM gateway offers, as OpenAI's GET /v1/models does." ||
		got[1].Docs != "https://platform.openai.com/docs/api-reference/models/list" || got[1].Example != "/models/v1/models" {
		t.Errorf("the catalog shows models as %+v", got[1])
	}
	if cur := tabEval[string](t, alice, `document.querySelector('nav a[aria-current=page]')?.textContent ?? ''`); cur != "APIs" {
		t.Errorf("the catalog's menu entry is %q, want APIs", cur)
	}
}
