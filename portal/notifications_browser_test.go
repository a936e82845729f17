package portal_test

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/portal"
)

// withWebhooks lets the demo portal's webhooks go to loopback, and keeps
// them in the demo's folder.
func withWebhooks(cfg string) string {
	return strings.Replace(cfg, "\t\t\tapprove_prod\n",
		"\t\t\tapprove_prod\n\t\t\twebhooks_loopback\n\t\t\twebhooks_file {$APIKEY_DEMO_DIR}/webhooks.json\n", 1)
}

// webhookReceiver is a developer's webhook receiver on 127.0.0.1: it
// checks each delivery's signature with the secret the portal showed.
type webhookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	secret   string
	received []receivedNotice
}

type receivedNotice struct {
	event, keyID, by string
	signed           bool
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	t.Helper()
	wr := &webhookReceiver{}
	wr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(portal.SignatureHeader)
		ts, v1, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
		wr.mu.Lock()
		defer wr.mu.Unlock()
		signed := wr.secret != "" && hmac.Equal([]byte(v1), []byte(portal.Sign(wr.secret, ts, body)))
		var n struct {
			Event string `json:"event"`
			KeyID string `json:"key_id"`
			By    string `json:"by"`
		}
		_ = json.Unmarshal(body, &n)
		wr.received = append(wr.received, receivedNotice{n.Event, n.KeyID, n.By, signed})
		if n.Event != r.Header.Get(portal.EventHeader) {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	t.Cleanup(wr.Close)
	return wr
}

// TestPortalNotifiesByWebhook: a developer sets a webhook (a receiver on
// 127.0.0.1, which the operator allowed with webhooks_loopback) and is
// shown its signing secret once; when an administrator pauses one of
// their keys, the receiver gets a signed key.paused notice, and the
// developer's Notifications page lists the notice and the delivery, 200.
// A URL that is not https (or loopback, allowed) is refused.
func TestPortalNotifiesByWebhook(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemoWithLLM(t, false, withWebhooks)
	alice, admin := p.signIn(t, "alice"), p.signIn(t, "admin")
	recv := newWebhookReceiver(t)

	p.open(t, alice, "/portal/keys")
	p.submit(t, alice, `nav a[href="/portal/notifications"]`)
	tabDo(t, alice, "typing a plain http URL", chromedp.SendKeys(chromedp.ID("url"), "http://example.com/hook"))
	p.submit(t, alice, `form[action="/portal/notifications"] button[type=submit]`)
	if msg := p.alerts(t, alice); !strings.Contains(msg, "https://") {
		t.Errorf("a plain http webhook URL: the page says %q, want a refusal naming https://", msg)
	}
	tabEval[bool](t, alice, `(document.getElementById('url').value = '') === ''`)
	tabDo(t, alice, "typing the receiver's URL", chromedp.SendKeys(chromedp.ID("url"), recv.URL+"/hook"))
	p.submit(t, alice, `form[action="/portal/notifications"] button[type=submit]:not([name])`)
	secret := tabEval[string](t, alice, `document.getElementById('webhook-secret')?.value ?? ''`)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("no signing secret shown after saving the webhook; the page says: %s", p.alerts(t, alice))
	}
	recv.mu.Lock()
	recv.secret = secret
	recv.mu.Unlock()
	p.open(t, alice, "/portal/notifications")
	if strings.Contains(p.html(t, alice), secret) {
		t.Error("the notifications page shows the webhook's secret again")
	}

	k := p.createWriter(t, alice, "watched")
	p.open(t, admin, "/portal/keys/"+k.id)
	p.submit(t, admin, `form[action="/portal/keys/`+k.id+`/pause"] button[type=submit]`)

	deadline := time.Now().Add(10 * time.Second)
	var got []receivedNotice
	for {
		recv.mu.Lock()
		got = append(got[:0], recv.received...)
		recv.mu.Unlock()
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 1 || got[0] != (receivedNotice{"key.paused", k.id, "admin", true}) {
		t.Fatalf("the receiver got %+v, want one signed key.paused of key %s by admin", got, k.id)
	}

	p.open(t, alice, "/portal/notifications")
	notice := tabEval[string](t, alice, `document.querySelector('li.notice[data-event="key.paused"]')?.innerText ?? ''`)
	if !strings.Contains(notice, k.id) || !strings.Contains(notice, "paused by the administrator admin") {
		t.Errorf("the notices list says %q, want key %s paused by admin", notice, k.id)
	}
	var row []string
	deadline = time.Now().Add(5 * time.Second)
	for {
		row = tabEval[[]string](t, alice, `[...(document.querySelector('table.deliveries tbody tr')?.cells ?? [])].map(td => td.textContent.trim())`)
		if len(row) == 6 && row[5] == "delivered" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
		p.open(t, alice, "/portal/notifications")
	}
	if len(row) != 6 || row[1] != "key.paused" || row[3] != "1" || row[4] != "200" || row[5] != "delivered" {
		t.Errorf("the last delivery shows %q, want key.paused, 1 attempt, 200, delivered", row)
	}
}

// saveWebhook sets the tab's developer's webhook on the Notifications page
// and gives the receiver the secret shown.
func (p *portalDemo) saveWebhook(t *testing.T, ctx context.Context, recv *webhookReceiver) {
	t.Helper()
	p.open(t, ctx, "/portal/notifications")
	tabDo(t, ctx, "typing the receiver's URL", chromedp.SendKeys(chromedp.ID("url"), recv.URL+"/hook"))
	p.submit(t, ctx, `form[action="/portal/notifications"] button[type=submit]:not([name])`)
	secret := tabEval[string](t, ctx, `document.getElementById('webhook-secret')?.value ?? ''`)
	if secret == "" {
		t.Fatalf("no signing secret shown after saving the webhook; the page says: %s", p.alerts(t, ctx))
	}
	recv.mu.Lock()
	recv.secret = secret
	recv.mu.Unlock()
}

// waitForNotices waits until the receiver holds n notices, and returns them.
func (recv *webhookReceiver) waitForNotices(t *testing.T, n int) []receivedNotice {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recv.mu.Lock()
		got := append([]receivedNotice(nil), recv.received...)
		recv.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPortalNotifiesOfQuotaAndExpiry: a developer with a webhook is told,
// signed, when their key reaches 80, 90 and 100 % of its daily quota (the
// demo's 20 a day), and when a key that expires within 14 days is used;
// the Notifications page lists the same notices.
func TestPortalNotifiesOfQuotaAndExpiry(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemoWithLLM(t, false, withWebhooks)
	alice := p.signIn(t, "alice")
	recv := newWebhookReceiver(t)
	p.saveWebhook(t, alice, recv)

	k := p.createWriter(t, alice, "busy")
	for i := range 21 {
		want := 200
		if i == 20 {
			want = 429
		}
		if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != want {
			t.Fatalf("key %s, request %d: %d, want %d", k.id, i+1, r.status, want)
		}
	}
	got := recv.waitForNotices(t, 3)
	var percents []string
	for _, n := range got {
		if n.event != "key.quota" || n.keyID != k.id || !n.signed {
			t.Errorf("the receiver got %+v, want signed key.quota notices of key %s", n, k.id)
		}
	}
	p.open(t, alice, "/portal/notifications")
	percents = tabEval[[]string](t, alice, `[...document.querySelectorAll('li.notice[data-event="key.quota"]')].map(li => li.innerText)`)
	if len(got) != 3 || len(percents) != 3 || !strings.Contains(percents[0], "all of its daily quota") ||
		!strings.Contains(percents[1], "90%") || !strings.Contains(percents[2], "80%") {
		t.Errorf("key %s: %d notices received, the page lists %q; want 80 %%, 90 %% and all of the quota", k.id, len(got), percents)
	}

	// A key that expires in 7 days: its first use tells its owner, once.
	p.open(t, alice, "/portal/keys/new")
	tabDo(t, alice, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), "short-lived"),
		chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
		chromedp.Click(chromedp.CSS(`input[name=services][value=echo]`)),
		chromedp.SetValue(chromedp.ID("expiry_days"), "7"),
	)
	p.submit(t, alice, `form[action="/portal/keys"] button[type=submit]`)
	short := createdKey{
		secret: tabEval[string](t, alice, `document.getElementById('secret')?.value ?? ''`),
		id:     tabEval[string](t, alice, `document.querySelector('.card.secret p code')?.textContent ?? ''`),
	}
	if short.secret == "" {
		t.Fatalf("no key was shown; the page says: %s", p.alerts(t, alice))
	}
	for range 2 {
		if r := p.gateway(t, "GET", "/echo/hello", short.secret); r.status != 200 {
			t.Fatalf("key %s: %d", short.id, r.status)
		}
	}
	got = recv.waitForNotices(t, 4)
	if len(got) != 4 || got[3] != (receivedNotice{"key.expiring", short.id, "", true}) {
		t.Errorf("after using key %s, which expires in 7 days: the receiver got %+v, want a 4th, signed key.expiring", short.id, got)
	}
	p.open(t, alice, "/portal/notifications")
	if text := tabEval[string](t, alice, `document.querySelector('li.notice[data-event="key.expiring"]')?.innerText ?? ''`); !strings.Contains(text, short.id) || !strings.Contains(text, "within 14 days") {
		t.Errorf("the page's expiry notice: %q", text)
	}
}
