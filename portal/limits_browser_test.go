package portal_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// withLimits adds to the demo (whose developers may give their keys
// limits: max_rate 10/s, max_quota_per_day 100, max_tokens_per_day 100000,
// models llama3* mistral* qwen2.5) an LLM route (tokens openai, answered
// by Caddy itself) for a service llm.
func withLimits(t *testing.T) func(string) string {
	return func(cfg string) string {
		const policy = "\t\t\tmax_keys 5\n"
		const route = "\tredir / /portal/\n"
		if !strings.Contains(cfg, policy) || !strings.Contains(cfg, route) {
			t.Fatal("the portal demo's max_keys or its last redir was not found")
		}
		for _, limit := range []string{"max_rate 10/s\n", "max_quota_per_day 100\n", "max_tokens_per_day 100000\n", "models llama3* mistral* qwen2.5\n"} {
			if !strings.Contains(cfg, "\t\t\t"+limit) {
				t.Fatalf("the portal demo does not offer %s", strings.TrimSpace(limit))
			}
		}
		cfg = strings.Replace(cfg, policy, policy+"\t\t\tservice llm /llm/v1/models\n", 1)
		return strings.Replace(cfg, route, "\thandle /llm/* {\n\t\tapikey {\n"+
			"\t\t\tkeys file {$APIKEY_DEMO_DIR:/tmp/apikey-portal-demo}/keys.json\n\t\t\tservice llm\n\t\t\tfailed_auth_limit 1000/m\n\t\t\ttokens openai\n\t\t}\n"+
			"\t\theader Content-Type application/json\n"+
			"\t\trespond `{\"id\": \"c1\", \"object\": \"chat.completion\", \"model\": \"llama3\", \"choices\": [], \"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 5, \"total_tokens\": 10}}`\n"+
			"\t}\n"+route, 1)
	}
}

// chat asks the demo's LLM route for a completion by model with key.
func (p *portalDemo) chat(t *testing.T, key, model string) gatewayAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": model, "max_tokens": 10, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	req, err := http.NewRequest("POST", p.base+"/llm/v1/chat/completions", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := gatewaytest.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	a := gatewayAnswer{status: resp.StatusCode, header: resp.Header, body: string(data)}
	var doc struct {
		Error struct {
			Code   string `json:"code"`
			Reason string `json:"reason"`
		} `json:"error"`
	}
	if resp.StatusCode >= 400 && json.Unmarshal(data, &doc) == nil {
		a.code, a.reason = doc.Error.Code, doc.Error.Reason
	}
	return a
}

// TestPortalKeyLimitsWithinPolicy: a developer gives a key its own daily
// quota, rate, token budget and models in the Create key form, within
// what the operator allows (max_rate, max_quota_per_day,
// max_tokens_per_day, models), and the gateway enforces the key's own
// limits; a limit beyond the policy is refused naming the field; the key's
// page edits them.
func TestPortalKeyLimitsWithinPolicy(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemoWithin(t, false, 5*time.Minute, withLimits(t))
	alice := p.signIn(t, "alice")

	create := func(name, service string, fields map[string]string) createdKey {
		t.Helper()
		p.open(t, alice, "/portal/keys/new")
		if n := tabEval[int](t, alice, `document.querySelectorAll('fieldset.limits input, fieldset.limits textarea').length`); n != 4 {
			t.Fatalf("the Create key form offers %d limits, want 4 (rate, requests a day, tokens a day, models)", n)
		}
		tabDo(t, alice, "filling the form",
			chromedp.SendKeys(chromedp.ID("name"), name),
			chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
			chromedp.Click(chromedp.CSS(`input[name=services][value=`+service+`]`)),
			// Chat completions are POSTs.
			chromedp.SetValue(chromedp.ID("role"), "writer"))
		for id, value := range fields {
			tabDo(t, alice, "filling "+id, chromedp.SendKeys(chromedp.ID(id), value))
		}
		p.submit(t, alice, `form[action="/portal/keys"] button[type=submit]`)
		k := createdKey{secret: tabEval[string](t, alice, `document.getElementById('secret')?.value ?? ''`),
			id: tabEval[string](t, alice, `document.querySelector('.card.secret p code')?.textContent ?? ''`)}
		if k.id == "" {
			t.Fatalf("creating key %q: %s", name, p.alerts(t, alice))
		}
		return k
	}

	// A daily quota of 3 (the route's is 20) and a rate.
	quota := create("three a day", "echo", map[string]string{"quota_per_day": "3", "rate": "10/s"})
	rec := demoRecords(t, dir)[quota.id]
	if rec.QuotaPerDay == nil || *rec.QuotaPerDay != 3 || rec.Rate != "10/s" {
		t.Fatalf("key %s was stored with quota_per_day %v and rate %q, want 3 and 10/s", quota.id, rec.QuotaPerDay, rec.Rate)
	}
	for i := 1; i <= 4; i++ {
		r := p.gateway(t, "GET", "/echo/hello", quota.secret)
		if want := map[bool]int{true: 200, false: 429}[i <= 3]; r.status != want {
			t.Errorf("key %s (3 a day), request %d: %d %s/%s, want %d", quota.id, i, r.status, r.code, r.reason, want)
		}
	}

	// Models and a token budget, on the LLM route.
	llm := create("llama only", "llm", map[string]string{"models": "llama3", "tokens_per_day": "50000"})
	rec = demoRecords(t, dir)[llm.id]
	if !slices.Equal(rec.Models, []string{"llama3"}) || rec.TokensPerDay == nil || *rec.TokensPerDay != 50000 {
		t.Fatalf("key %s was stored with models %v and tokens_per_day %v, want [llama3] and 50000", llm.id, rec.Models, rec.TokensPerDay)
	}
	if r := p.chat(t, llm.secret, "llama3"); r.status != 200 {
		t.Errorf("key %s asking for llama3: %d %s/%s, want 200", llm.id, r.status, r.code, r.reason)
	}
	if r := p.chat(t, llm.secret, "qwen2.5"); r.status != 403 || r.reason != "model" {
		t.Errorf("key %s (llama3 only) asking for qwen2.5: %d %s/%s, want 403 reason model", llm.id, r.status, r.code, r.reason)
	}
	// A key given no models gets the policy's, not every model.
	open := create("any model", "llm", nil)
	if got := demoRecords(t, dir)[open.id].Models; !slices.Equal(got, []string{"llama3*", "mistral*", "qwen2.5"}) {
		t.Errorf("key %s, given no models, allows %v, want the policy's [llama3* mistral* qwen2.5]", open.id, got)
	}
	if r := p.chat(t, open.secret, "gpt-4o"); r.status != 403 || r.reason != "model" {
		t.Errorf("key %s asking for gpt-4o, outside the policy: %d %s/%s, want 403 reason model", open.id, r.status, r.code, r.reason)
	}

	// Beyond the policy: refused, naming the field; nothing is made.
	token := p.csrfToken(t, "alice")
	before := len(demoRecords(t, dir))
	for _, c := range []struct{ field, value, want string }{
		{"quota_per_day", "101", "quota_per_day: 101 is more than the most your operator allows, 100"},
		{"tokens_per_day", "100001", "tokens_per_day: 100001 is more than the most your operator allows, 100000"},
		{"rate", "11/s", "rate: 11/s is faster than the most your operator allows, 10/s"},
		{"rate", "601/m", "rate: 601/m is faster than the most your operator allows, 10/s"},
		{"models", "gpt-4o", `models: &#34;gpt-4o&#34; is not among the models your operator allows`},
		{"models", "qwen*", `models: &#34;qwen*&#34; is not among the models your operator allows`},
		{"tokens_per_minute", "10", "tokens_per_minute: your operator does not let developers set a token budget per minute"},
	} {
		form := url.Values{"csrf": {token}, "name": {"too much"}, "type": {"dev"}, "role": {"writer"}, "services": {"llm"}, c.field: {c.value}}
		status, _, body := p.page(t, "alice", "POST", "/portal/keys", form, token)
		alert := strings.NewReplacer("<strong>", "", "</strong>", "").Replace(firstAlert(body))
		if status != 400 || !strings.Contains(alert, c.want) {
			t.Errorf("creating a key with %s %s: %d %q, want 400 saying %q", c.field, c.value, status, alert, c.want)
		}
	}
	if after := len(demoRecords(t, dir)); after != before {
		t.Errorf("refused forms made %d keys", after-before)
	}

	// The key's page shows and edits its limits.
	p.open(t, alice, "/portal/keys/"+quota.id)
	if text := tabEval[string](t, alice, `document.querySelector('dl.facts .limits')?.textContent ?? ''`); !strings.Contains(text, "3 requests a day") {
		t.Errorf("key %s's page shows its limits as %q", quota.id, text)
	}
	if v := tabEval[string](t, alice, `document.getElementById('quota_per_day').value`); v != "3" {
		t.Errorf("key %s's edit form shows quota_per_day %q, want 3", quota.id, v)
	}
	tabDo(t, alice, "raising the quota", chromedp.SetValue(chromedp.ID("quota_per_day"), "5"))
	p.submit(t, alice, `form[action="/portal/keys/`+quota.id+`"] button[type=submit]`)
	if rec := demoRecords(t, dir)[quota.id]; rec.QuotaPerDay == nil || *rec.QuotaPerDay != 5 || rec.Rate != "10/s" {
		t.Errorf("after the edit key %s has quota_per_day %v and rate %q, want 5 and 10/s: %s", quota.id, rec.QuotaPerDay, rec.Rate, p.alerts(t, alice))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := p.gateway(t, "GET", "/echo/hello", quota.secret)
		if r.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s, its quota raised to 5 after 3 requests, answers %d %s/%s", quota.id, r.status, r.code, r.reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
