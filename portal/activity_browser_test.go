package portal_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// llmRoute is a route with tokens added to the demo for these tests: Caddy
// itself answers as an OpenAI-compatible server would, reporting 5 prompt
// and 7 completion tokens.
const llmRoute = `
	handle /llm/* {
		apikey {
			keys file {$APIKEY_DEMO_DIR:/tmp/apikey-portal-demo}/keys.json
			tokens openai
			failed_auth_limit 1000/m
			usage_file {$APIKEY_DEMO_DIR:/tmp/apikey-portal-demo}/usage.json
		}
		header Content-Type application/json
		respond ` + "`" + `{"id": "c1", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}` + "`" + `
	}
`

// startPortalDemoWithLLM is startPortalDemo with llmRoute added, and, when
// webhooks is set, with the option that lets webhooks go to loopback.
func startPortalDemoWithLLM(t *testing.T, redis bool, edit func(cfg string) string) (*portalDemo, string) {
	t.Helper()
	return startPortalDemoWithin(t, redis, 5*time.Minute, func(cfg string) string {
		const anchor = "\thandle /models/* {"
		if !strings.Contains(cfg, anchor) {
			t.Fatal("the portal demo has no models route to add the LLM route before")
		}
		cfg = strings.Replace(cfg, anchor, llmRoute+anchor, 1)
		if edit != nil {
			cfg = edit(cfg)
		}
		if redis {
			cfg = strings.Replace(cfg, "keys file {$APIKEY_DEMO_DIR:/tmp/apikey-portal-demo}/keys.json", "keys redis", 1) // the LLM route's
		}
		return cfg
	})
}

// createWriter makes a development key for echo, role writer, through the
// Create key form.
func (p *portalDemo) createWriter(t *testing.T, ctx context.Context, name string) createdKey {
	t.Helper()
	p.open(t, ctx, "/portal/keys/new")
	tabDo(t, ctx, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
		chromedp.SetValue(chromedp.ID("role"), "writer"),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
	)
	p.submit(t, ctx, `form[action="/portal/keys"] button[type=submit]`)
	k := p.shownKey(t, ctx)
	if k.secret == "" || k.id == "" {
		t.Fatalf("no key was shown after Generate key; the page says: %s", p.alerts(t, ctx))
	}
	return k
}

// activityTable reads the rows of one of the usage page's activity tables
// as text cells.
func activityTable(t *testing.T, ctx context.Context, class string) [][]string {
	t.Helper()
	return tabEval[[][]string](t, ctx, `[...document.querySelectorAll('section.activity table.`+class+` tbody tr')].map(tr => [...tr.cells].map(td => td.textContent.trim()))`)
}

// TestPortalExplainsRefusals: a developer whose key was refused sees on
// the key's usage page why (the refusals counted by reason, with their
// status), what it used per model (requests and tokens), and its last
// requests (time, method, path without the query, status, reason,
// tokens), on the key file and on Redis.
func TestPortalExplainsRefusals(t *testing.T) {
	fullSuiteOnly(t)
	for _, variant := range []struct {
		name  string
		redis bool
	}{{"key file", false}, {"redis", true}} {
		t.Run(variant.name, func(t *testing.T) {
			p, _ := startPortalDemoWithLLM(t, variant.redis, nil)
			alice := p.signIn(t, "alice")
			k := p.createWriter(t, alice, "explained")

			if r := p.gateway(t, "GET", "/echo/hello?user_token=abc", k.secret); r.status != 200 {
				t.Fatalf("key %s: GET %d %s", k.id, r.status, r.code)
			}
			if r := p.gateway(t, "GET", "/models/v1/models", k.secret); r.status != 403 || r.reason != "service" {
				t.Fatalf("key %s (echo only): GET /models/v1/models %d %s, want 403 service", k.id, r.status, r.reason)
			}
			for _, model := range []string{"llama3", "llama3", "mistral"} {
				if status := p.chat(t, k.secret, model).status; status != 200 {
					t.Fatalf("key %s: chat with %s answered %d", k.id, model, status)
				}
			}
			// Paused by its owner on the portal: refused, reason paused.
			p.open(t, alice, "/portal/keys/"+k.id)
			p.submit(t, alice, `form[action="/portal/keys/`+k.id+`/pause"] button[type=submit]`)
			waitForGateway(t, p, k, "GET", 403, "forbidden")

			p.open(t, alice, "/portal/keys/"+k.id)
			p.submit(t, alice, `a[href="/portal/usage?key=`+k.id+`"]`)
			refusals := activityTable(t, alice, "refusals")
			got := map[string]string{}
			for _, row := range refusals {
				if len(row) == 3 {
					got[row[0]] = row[1] + " " + row[2]
				}
			}
			// waitForGateway may have been refused more than once.
			if got["service"] != "403 1" || !strings.HasPrefix(got["paused"], "403 ") || got["paused"] == "403 0" || len(got) != 2 {
				t.Errorf("key %s: refusals by reason show %v, want service 403 once and paused 403", k.id, refusals)
			}
			models := activityTable(t, alice, "models")
			if fmt.Sprint(models) != "[[llama3 2 24] [mistral 1 12]]" {
				t.Errorf("key %s: requests and tokens per model show %v, want llama3 2 requests 24 tokens, mistral 1 and 12", k.id, models)
			}
			log := activityTable(t, alice, "requestlog")
			if len(log) < 6 {
				t.Fatalf("key %s: the request log shows %d requests, want at least 6: %v", k.id, len(log), log)
			}
			// Newest first: the paused refusals (waitForGateway may have
			// sent more than one), then the chats, the refusal of another service, the GET.
			if r := log[0]; r[1] != "GET" || r[2] != "/echo/hello" || r[3] != "403" || r[4] != "paused" {
				t.Errorf("key %s: the newest request logged is %v, want GET /echo/hello 403 paused", k.id, r)
			}
			n := len(log)
			wantTail := [][]string{
				{"POST", "/llm/v1/chat/completions", "200", "", "12"},
				{"POST", "/llm/v1/chat/completions", "200", "", "12"},
				{"POST", "/llm/v1/chat/completions", "200", "", "12"},
				{"GET", "/models/v1/models", "403", "service", "0"},
				{"GET", "/echo/hello", "200", "", "0"},
			}
			for i, w := range wantTail {
				if r := log[n-len(wantTail)+i]; fmt.Sprint(r[1:]) != fmt.Sprint(w) {
					t.Errorf("key %s: request log line %d is %v, want %v", k.id, n-len(wantTail)+i, r[1:], w)
				}
			}
			if html := p.html(t, alice); strings.Contains(html, "user_token") {
				t.Errorf("key %s: the usage page shows a request's query string", k.id)
			}
		})
	}
}
