package portal_test

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// TestPortalExportsTablesAsCSV: a developer downloads My keys and a key's
// request log from the CSV links beside them, in the browser; the files
// hold the rows the pages show, served as text/csv attachments, and a cell
// a spreadsheet would run as a formula (a key named "=SUM(1+1)") starts
// with a '.
func TestPortalExportsTablesAsCSV(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemoWithLLM(t, false, nil)
	alice := p.signIn(t, "alice")
	k := p.createWriter(t, alice, "=SUM(1+1)")
	if r := p.gateway(t, "GET", "/echo/hello?q=1", k.secret); r.status != 200 {
		t.Fatalf("key %s: %d", k.id, r.status)
	}
	if r := p.gateway(t, "GET", "/models/v1/models", k.secret); r.status != 403 {
		t.Fatalf("key %s on another service: %d, want 403", k.id, r.status)
	}

	download := downloader(t, alice)

	p.open(t, alice, "/portal/keys")
	keys := download(`a[href="/portal/keys.csv"]`)
	if len(keys) != 2 || keys[0][0] != "id" || keys[1][0] != k.id || keys[1][1] != "'=SUM(1+1)" {
		t.Errorf("keys.csv: %q, want a header and key %s named '=SUM(1+1)", keys, k.id)
	}

	p.open(t, alice, "/portal/usage?key="+k.id)
	log := download(`section.activity a[href*="table=requestlog"]`)
	want := "[[time method path status reason tokens] [GET /models/v1/models 403 service 0] [GET /echo/hello 200  0]]"
	if len(log) == 3 && len(log[1]) == 6 && len(log[2]) == 6 {
		if got := "[" + strings.Join([]string{"[" + strings.Join(log[0], " ") + "]", "[" + strings.Join(log[1][1:], " ") + "]", "[" + strings.Join(log[2][1:], " ") + "]"}, " ") + "]"; got != want {
			t.Errorf("the request log's CSV: %q, want %s", log, want)
		}
		if _, err := time.Parse(time.RFC3339, log[1][0]); err != nil {
			t.Errorf("the request log's CSV time %q: %v", log[1][0], err)
		}
	} else {
		t.Errorf("the request log's CSV: %q, want %s", log, want)
	}

	// Served as attachments of type text/csv.
	for _, path := range []string{"/portal/keys.csv", "/portal/usage.csv?table=usage", "/portal/usage.csv?table=refusals&key=" + k.id} {
		status, header, _ := p.page(t, "alice", "GET", path, nil, "")
		if status != 200 || header.Get("Content-Type") != "text/csv; charset=utf-8" || !strings.HasPrefix(header.Get("Content-Disposition"), "attachment; filename=") {
			t.Errorf("%s: %d, Content-Type %q, Content-Disposition %q; want 200, text/csv, attachment", path, status, header.Get("Content-Type"), header.Get("Content-Disposition"))
		}
	}
	// Another developer's key's tables are not there for bob.
	if status, _, body := p.page(t, "bob", "GET", "/portal/usage.csv?table=requestlog&key="+k.id, nil, ""); status != 404 || strings.Contains(body, "/echo/hello") {
		t.Errorf("bob asking for key %s's request log as CSV: %d, want 404 without it", k.id, status)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// downloader lets the tab download files, and returns what clicking a
// link (its CSS selector) downloads, read as CSV.
func downloader(t *testing.T, ctx context.Context) func(link string) [][]string {
	t.Helper()
	downloads := t.TempDir()
	bctx := chromedp.FromContext(ctx).BrowserContextID
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads, BrowserContextID: bctx,
	}); err != nil {
		t.Fatalf("allowing downloads: %v", err)
	}
	return func(link string) [][]string {
		t.Helper()
		if n := tabEval[int](t, ctx, `document.querySelectorAll(`+jsQuote(link)+`).length`); n != 1 {
			t.Fatalf("%d links match %s, want 1", n, link)
		}
		for _, f := range must(os.ReadDir(downloads)) {
			_ = os.Remove(filepath.Join(downloads, f.Name()))
		}
		tabDo(t, ctx, "clicking "+link, chromedp.Click(chromedp.CSS(link)))
		deadline := time.Now().Add(10 * time.Second)
		for {
			for _, f := range must(os.ReadDir(downloads)) {
				if strings.HasSuffix(f.Name(), ".csv") {
					data := must(os.ReadFile(filepath.Join(downloads, f.Name())))
					rows, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
					if err != nil {
						t.Fatalf("%s is not CSV: %v", f.Name(), err)
					}
					return rows
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("clicking %s downloaded no .csv file", link)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestPortalAdminExportsTablesAsCSV: an administrator filters the admin
// page's list of every key by owner and downloads it, and the recent
// audit entries, from the links beside them: the files hold the rows the
// page shows, the filter applied, with formula cells defused. A developer
// gets 403 for both.
func TestPortalAdminExportsTablesAsCSV(t *testing.T) {
	fullSuiteOnly(t)
	p, _ := startPortalDemo(t, false)
	alice, bob, admin := p.signIn(t, "alice"), p.signIn(t, "bob"), p.signIn(t, "admin")
	a1 := p.createKey(t, alice, "@alice one", "dev")
	a2 := p.createKey(t, alice, "alice two", "dev")
	b1 := p.createKey(t, bob, "bob one", "dev")
	download := downloader(t, admin)

	p.open(t, admin, "/portal/admin?owner=alice")
	link := `a[href^="/portal/admin/keys.csv?"][href*="owner=alice"]`
	listed := tabEval[[]string](t, admin, `[...document.querySelectorAll('table.keys tbody tr td:first-child a code')].map(c => c.textContent)`)
	keys := download(link)
	var ids []string
	names := map[string]string{}
	for _, row := range keys[1:] {
		ids = append(ids, row[0])
		names[row[0]] = row[1]
		if row[3] != "alice" {
			t.Errorf("admin keys.csv filtered by owner alice holds %q", row)
		}
	}
	slices.Sort(ids)
	slices.Sort(listed)
	want := []string{a1.id, a2.id}
	slices.Sort(want)
	if len(keys) == 0 || keys[0][0] != "id" || keys[0][3] != "owner" || !slices.Equal(ids, want) || !slices.Equal(ids, listed) {
		t.Errorf("admin keys.csv with owner alice: ids %v (header %q), the page lists %v; want %v (not bob's %s)", ids, keys[0], listed, want, b1.id)
	}
	if names[a1.id] != "'@alice one" {
		t.Errorf("key %s's name in the CSV: %q, want it defused: '@alice one", a1.id, names[a1.id])
	}

	audit := download(`a[href="/portal/admin/audit.csv"]`)
	shown := tabEval[int](t, admin, `document.querySelectorAll('table.audit tbody tr').length`)
	created := map[string]string{}
	for _, row := range audit[1:] {
		if row[1] == "key.created" {
			created[row[2]] += row[3] + " " // also the key file's own line
		}
	}
	if len(audit) != shown+1 || audit[0][1] != "event" || !strings.Contains(created[a1.id], "portal:alice") ||
		!strings.Contains(created[b1.id], "portal:bob") {
		t.Errorf("audit.csv: %d rows (the page shows %d), key.created by %v; want the page's rows with alice's %s and bob's %s",
			len(audit)-1, shown, created, a1.id, b1.id)
	}

	for _, path := range []string{"/portal/admin/keys.csv", "/portal/admin/audit.csv"} {
		if status, _, body := p.page(t, "bob", "GET", path, nil, ""); status != 403 || strings.Contains(body, a1.id) {
			t.Errorf("bob asking for %s: %d, want 403 without alice's keys", path, status)
		}
	}
}
