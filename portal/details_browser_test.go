package portal_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/internal/browsertest"
	"github.com/moodmnky/caddy-apikey/internal/testtools"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// createKeyFor makes a development key for one service through the Create
// key form, and reads it off the page that shows it once.
func (p *portalDemo) createKeyFor(t *testing.T, ctx context.Context, name, service string) createdKey {
	t.Helper()
	p.open(t, ctx, "/portal/keys/new")
	tabDo(t, ctx, "filling the form",
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.Click(chromedp.CSS(`input[name=type][value=dev]`)),
		chromedp.Click(chromedp.CSS(`input[name=services][value=`+service+`]`)),
	)
	p.submit(t, ctx, `form[action="/portal/keys"] button[type=submit]`)
	k := createdKey{
		secret: tabEval[string](t, ctx, `document.getElementById('secret')?.value ?? ''`),
		id:     tabEval[string](t, ctx, `document.querySelector('.card.secret p code')?.textContent ?? ''`),
	}
	if k.secret == "" || k.id == "" {
		t.Fatalf("no key was shown after Generate key; the page says: %s", p.alerts(t, ctx))
	}
	return k
}

// phone makes the tab 390 px wide (a phone), until the test ends.
func phone(t *testing.T, ctx context.Context) {
	t.Helper()
	tabDo(t, ctx, "emulating a phone", chromedp.EmulateViewport(390, 844))
	t.Cleanup(func() { _ = chromedp.Do(ctx, chromedp.EmulateViewport(browsertest.Width, browsertest.Height)) })
}

// TestPortalPageDetails: what a developer meets on every visit. Focus
// starts at the page's heading; the one-time key is wholly in view at
// phone width; the usage chart has a scale and readable ticks at phone
// width; the OpenAI SDK snippet prints the models' ids, not the SDK's
// page object.
func TestPortalPageDetails(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemo(t, false)
	alice := p.signIn(t, "alice")

	t.Run("focus starts at the heading", func(t *testing.T) {
		for _, path := range []string{"/portal/keys", "/portal/keys/new", "/portal/usage", "/portal/playground"} {
			p.open(t, alice, path)
			focused := tabPoll(t, alice, `document.activeElement === document.querySelector('main h1') ? 'h1' : ''`)
			if focused == "" {
				t.Errorf("%s: after loading, focus is on <%s>, want the page's heading", path,
					tabEval[string](t, alice, `document.activeElement.tagName.toLowerCase()`))
			}
		}
	})

	t.Run("the key is in view at phone width", func(t *testing.T) {
		phone(t, alice)
		k := p.createKeyFor(t, alice, "phone", "echo")
		box := tabEval[struct {
			Right, Width     float64
			Scroll, Client   float64
			ScrollH, ClientH float64
		}](t, alice, `(e => { const r = e.getBoundingClientRect();
			return {Right: r.right, Width: innerWidth, Scroll: e.scrollWidth, Client: e.clientWidth, ScrollH: e.scrollHeight, ClientH: e.clientHeight} })(document.getElementById('secret'))`)
		if box.Right > box.Width || box.Scroll > box.Client+1 || box.ScrollH > box.ClientH+1 {
			t.Errorf("key %s at 390 px: the key's field ends at %.0f of %.0f px and holds %.0f×%.0f px of text in %.0f×%.0f: part of the key is hidden",
				k.id, box.Right, box.Width, box.Scroll, box.ScrollH, box.Client, box.ClientH)
		}
	})

	t.Run("the chart has a scale and readable ticks at phone width", func(t *testing.T) {
		k := p.createKeyFor(t, alice, "chart", "echo")
		for range 3 {
			if r := p.gateway(t, "GET", "/echo/hello", k.secret); r.status != 200 {
				t.Fatalf("key %s: %d", k.id, r.status)
			}
		}
		phone(t, alice)
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.open(t, alice, "/portal/usage")
			if readUsage(t, alice).sum >= 3 || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		type textBox struct {
			Text                     string
			Left, Right, Top, Bottom float64
			W, H                     float64
		}
		chart := tabEval[struct {
			Box    textBox
			YTicks []textBox
			Ticks  []textBox
		}](t, alice, `(() => {
			const box = e => { const r = e.getBoundingClientRect();
				return {Text: e.textContent, Left: r.left, Right: r.right, Top: r.top, Bottom: r.bottom, W: r.width, H: r.height} };
			const svg = document.querySelector('svg.chart');
			const shown = e => getComputedStyle(e).display !== 'none';
			return {Box: box(svg), YTicks: [...svg.querySelectorAll('text.ytick')].filter(shown).map(box),
				Ticks: [...svg.querySelectorAll('text.tick')].filter(shown).map(box)};
		})()`)
		if len(chart.YTicks) < 2 {
			t.Errorf("the chart has %d labels on its scale, want a scale (0 and at least one more)", len(chart.YTicks))
		}
		if len(chart.Ticks) < 3 {
			t.Errorf("the chart shows %d time ticks at 390 px, want at least 3", len(chart.Ticks))
		}
		for i, tick := range append(chart.YTicks, chart.Ticks...) {
			if tick.Left < chart.Box.Left-0.5 || tick.Right > chart.Box.Right+0.5 {
				t.Errorf("tick %q is cut off: %.0f–%.0f px, the chart is %.0f–%.0f", tick.Text, tick.Left, tick.Right, chart.Box.Left, chart.Box.Right)
			}
			if tick.H < 10 || tick.W < 0.4*tick.H*float64(len(tick.Text)) {
				t.Errorf("tick %q is squeezed: %.0f×%.0f px", tick.Text, tick.W, tick.H)
			}
			if i > len(chart.YTicks) && tick.Left < chart.Ticks[i-len(chart.YTicks)-1].Right {
				t.Errorf("tick %q overlaps the one before it", tick.Text)
			}
		}
	})

	t.Run("the OpenAI SDK snippet prints the models", func(t *testing.T) {
		node := testtools.Require(t, "node", "APIKEY_REQUIRE_NODE", "apt-get install nodejs npm, then cd testdata/clients && npm ci")
		clients, err := filepath.Abs("../testdata/clients")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(clients, "node_modules", "openai", "package.json")); err != nil {
			testtools.Missing(t, "the npm packages in testdata/clients", "APIKEY_REQUIRE_NODE", "cd testdata/clients && npm ci")
		}
		k := p.createKeyFor(t, alice, "sdk", "models")
		code := tabEval[string](t, alice, `[...document.querySelectorAll('.snippet')].find(s => s.querySelector('h3').textContent.startsWith('TypeScript (OpenAI SDK)'))?.querySelector('code').textContent ?? ''`)
		if code == "" {
			t.Fatalf("key %s: the page shows no TypeScript (OpenAI SDK) snippet", k.id)
		}
		// In the clients folder, so that import "openai" finds its package.
		f, err := os.CreateTemp(clients, "portal-snippet-*.mjs")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f.Name()) })
		if _, err := f.WriteString(code); err != nil {
			t.Fatal(err)
		}
		f.Close()
		out, err := exec.Command(node, f.Name()).CombinedOutput()
		shown := keystore.MaskSecrets(string(out))
		if err != nil || strings.TrimSpace(string(out)) != "llama3" {
			t.Errorf("key %s: the OpenAI SDK snippet printed %.300q (%v), want the model's id, llama3", k.id, shown, err)
		}
	})
}

// TestPortalTellsKeysApart: every key shows its type's prefix and the
// secret's last 4 characters (DEV_API_…abcd), kept at creation and at each
// rotation, never more of it; and when and by whom it was created.
func TestPortalTellsKeysApart(t *testing.T) {
	fullSuiteOnly(t)
	p, dir := startPortalDemo(t, false)
	alice := p.signIn(t, "alice")
	k := p.createKey(t, alice, "hinted", "dev")
	check := func(when string) {
		t.Helper()
		want := "DEV_API_…" + k.secret[len(k.secret)-4:]
		if got := demoRecords(t, dir)[k.id].Hint; got != k.secret[len(k.secret)-4:] {
			t.Errorf("%s: key %s's record keeps a hint of %d characters that is not the secret's last 4", when, k.id, len(got))
		}
		for _, path := range []string{"/portal/keys", "/portal/keys/" + k.id} {
			p.open(t, alice, path)
			html := p.html(t, alice)
			if !strings.Contains(tabEval[string](t, alice, `document.querySelector('main').innerText`), want) {
				t.Errorf("%s: %s does not show key %s as DEV_API_… and its last 4 characters", when, path, k.id)
			}
			if strings.Contains(html, k.secret[len(k.secret)-5:]) {
				t.Errorf("%s: %s shows more than the last 4 characters of key %s", when, path, k.id)
			}
		}
		if text := tabEval[string](t, alice, `document.querySelector('main').innerText`); !strings.Contains(text, "by alice") {
			t.Errorf("%s: key %s's page does not say who created it", when, k.id)
		}
	}
	check("after creation")
	p.open(t, alice, "/portal/keys/"+k.id)
	p.submit(t, alice, `form[action="/portal/keys/`+k.id+`/rotate"] button[type=submit]`)
	k.secret = tabEval[string](t, alice, `document.getElementById('secret')?.value ?? ''`)
	if k.secret == "" {
		t.Fatalf("rotating key %s showed no new secret", k.id)
	}
	check("after rotation")
}
