// Package browsertest runs a real headless Chromium for tests, driven with
// chromedp: Start gives a test the browser, and User opens a tab signed in
// as one user, in a browser context of its own.
//
// The tests of one test binary share one Chromium process, started by the
// first test that asks for it and stopped by Stop, which the package's
// TestMain calls after the tests: starting Chromium costs about three CPU
// seconds, as much as twenty page loads. Tests still do not see each other:
// every tab has its own browser context (cookies, storage, cache and
// permissions), as a separate browser profile would.
package browsertest

import (
	"context"
	"encoding/base64"
	"os"
	"sync"
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

// Browser is the test's use of the shared headless Chromium.
type Browser struct {
	t        testing.TB
	ctx      context.Context // the browser's own chromedp context
	deadline time.Time       // when the test's actions fail
}

// shared is the test binary's Chromium.
var shared struct {
	mu     sync.Mutex
	ctx    context.Context // the browser's chromedp context; nil before the first Start
	cancel func()
	dir    string // its user data folder
}

// Start gives the test the test binary's Chromium, launching it when no
// test has yet. Every action of the test's tabs fails once timeout has
// passed (or the test binary's deadline is near), so a page that never
// answers fails the test instead of hanging it.
func Start(t testing.TB, timeout time.Duration) *Browser {
	t.Helper()
	bin := testtools.Require(t, "chromium", RequireEnv, "apt-get install chromium", "chromium-browser", "google-chrome")
	deadline := time.Now().Add(timeout)
	end, hasEnd := time.Time{}, false
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if end, hasEnd = d.Deadline(); hasEnd && end.Add(-5*time.Second).Before(deadline) {
			deadline = end.Add(-5 * time.Second)
		}
	}
	ctx, err := browser(bin, end, hasEnd)
	if err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	return &Browser{t: t, ctx: ctx, deadline: deadline}
}

// browser returns the running shared browser, or launches it (again, if
// the one before has exited). end, when set, is the test binary's
// deadline: the browser does not outlive it.
func browser(bin string, end time.Time, hasEnd bool) (context.Context, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.ctx != nil && shared.ctx.Err() == nil {
		return shared.ctx, nil
	}
	stopLocked()
	dir, err := os.MkdirTemp("", "browsertest-")
	if err != nil {
		return nil, err
	}
	life, cancelLife := context.Background(), func() {}
	if hasEnd {
		life, cancelLife = context.WithDeadline(life, end.Add(-time.Second))
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(life,
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
		// The spare renderer is a process started ahead of the next tab;
		// each tab here is a browser context of its own, which cannot use
		// it, so it was started, and thrown away, for every tab.
		chromedp.Flag("disable-features", "Translate,SpareRendererForSitePerProcess"),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(Width, Height),
	)
	ctx, cancelBrowser := chromedp.NewContext(alloc)
	cancel := func() {
		cancelBrowser()
		cancelAlloc()
		cancelLife()
		os.RemoveAll(dir)
	}
	// The first action starts the process; its context is the browser's
	// whole life.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		return nil, err
	}
	shared.ctx, shared.cancel, shared.dir = ctx, cancel, dir
	return ctx, nil
}

// Stop closes the shared browser, if one was started, and removes its
// folder. TestMain calls it after the tests.
func Stop() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	stopLocked()
}

func stopLocked() {
	if shared.cancel != nil {
		shared.cancel()
	}
	shared.ctx, shared.cancel, shared.dir = nil, nil, ""
}

// User returns a chromedp context for a new tab in a browser context of its
// own (its own cookies, storage and cache, as a separate browser profile
// would have), which sends user and password as HTTP basic authentication on
// every request. chromedp cannot type into the browser's sign-in dialog, and
// Chromium drops user:password@ from the addresses of a page's resources,
// so the Authorization header is set on the tab instead. With user "" the
// tab signs in as nobody. The tab and its browser context close when the
// test ends.
func (b *Browser) User(user, password string) context.Context {
	b.t.Helper()
	tab, closeTab := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	ctx, cancel := context.WithDeadline(tab, b.deadline)
	b.t.Cleanup(func() {
		cancel()
		closeTab()
	})
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
