package admin

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReferenceHasEveryEndpoint keeps docs/admin-api.md current: each
// endpoint the admin API routes has exactly one row in the docs, on that
// page (`| `METHOD /path…`, with {id} written <id>), and each row there
// names an endpoint that exists.
func TestReferenceHasEveryEndpoint(t *testing.T) {
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs pages: %v", err)
	}
	row := regexp.MustCompile("(?m)^\\| `((?:GET|POST|PUT|PATCH|DELETE) /[^`?\\[]*)")
	rows := map[string][]string{} // "METHOD /path" → pages
	for _, page := range pages {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range row.FindAllStringSubmatch(string(data), -1) {
			rows[m[1]] = append(rows[m[1]], filepath.Base(page))
		}
	}
	known := map[string]bool{}
	for _, r := range routes() {
		name := r.method + " " + strings.ReplaceAll(r.path, "{id}", "<id>")
		known[name] = true
		if got := rows[name]; len(got) != 1 || got[0] != "admin-api.md" {
			t.Errorf("endpoint %s: rows in %v, want one, in docs/admin-api.md", name, got)
		}
	}
	for name, in := range rows {
		if !known[name] {
			t.Errorf("docs (%v) have a row for %s, which the admin API does not route", in, name)
		}
	}
}
