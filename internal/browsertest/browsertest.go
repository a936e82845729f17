// Package browsertest runs a real headless Chromium for a test, driven with
// chromedp: Start launches it, and User opens a tab signed in as one user.
package browsertest

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/moodmnky/caddy-apikey/internal/testtools"
)

// RequireEnv, when set, turns a missing chromium from a skip into a
// failure; .ci/run sets it, so CI cannot pass without the browser tests.
const RequireEnv = "APIKEY_REQUIRE_CHROMIUM"

// Width and Height are the browser window's size: a desktop screen.
const Width, Height = 1200, 900

// Browser is a headless Chromium the test owns.
type Browser struct {
	t   testing.TB
	ctx context.Context // the browser's own chromedp context
}

// Start launches Chromium, which the test stops when it ends. Every action
// fails once timeout has passed (or the test binary's deadline is near), so a
// page that never answers fails the test instead of hanging it.
func Start(t testing.TB, timeout time.Duration) *Browser {
	t.Helper()
	bin := testtools.Require(t, "chromium", RequireEnv, "apt-get install chromium", "chromium-browser", "google-chrome")
	deadline := time.Now().Add(timeout)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if end, ok := d.Deadline(); ok && end.Add(-5*time.Second).Before(deadline) {
			deadline = end.Add(-5 * time.Second)
		}
	}
	limited, cancelLimit := context.WithDeadline(context.Background(), deadline)
	alloc, cancelAlloc := chromedp.NewExecAllocator(limited,
		chromedp.ExecPath(bin),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-features", "Translate"),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(Width, Height),
	)
	ctx, cancelBrowser := chromedp.NewContext(alloc)
	// The first action starts the process; its context is the browser's
	// whole life.
	if err := chromedp.Do(ctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		cancelLimit()
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancelLimit()
	})
	return &Browser{t: t, ctx: ctx}
}

// User returns a chromedp context for a new tab in a browser context of its
// own (its own cookies, storage and cache, as a separate browser profile
// would have), which sends user and password as HTTP basic authentication on
// every request. chromedp cannot type into the browser's sign-in dialog, and
// Chromium drops user:password@ from the addresses of a page's resources,
// so the Authorization header is set on the tab instead. With user "" the
// tab signs in as nobody. The tab closes when the test ends.
func (b *Browser) User(user, password string) context.Context {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		b.t.Fatalf("opening a tab for %q: %v", user, err)
	}
	if user != "" {
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": auth},
		}); err != nil {
			b.t.Fatalf("signing the tab in as %q: %v", user, err)
		}
	}
	return ctx
}
