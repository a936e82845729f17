package apikey

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestReadmeCaddyfiles adapts every Caddyfile example in README.md, so the
// manual cannot show a directive or form the plugin does not take. Snippets
// that are a route or a handler are put in a site first; the syntax summary
// (with its <placeholders>) is left out.
func TestReadmeCaddyfiles(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 10 {
		t.Fatalf("found %d Caddyfile examples in README.md", len(blocks))
	}
	checked := 0
	for i, b := range blocks {
		text := b[1]
		if strings.Contains(text, "<") || strings.Contains(text, "...") {
			continue // syntax, not an example
		}
		if strings.Contains(text, " exec ") {
			continue // needs the caddy-events-exec plugin, as the README says
		}
		checked++
		first := strings.TrimSpace(strings.SplitN(strings.TrimSpace(text), "\n", 2)[0])
		switch {
		case strings.HasPrefix(first, "handle_path"), strings.HasPrefix(first, "handle "), strings.HasPrefix(first, "apikey"):
			text = "example.com {\n" + text + "\n}\n"
		}
		if _, err := gatewaytest.Adapt(text); err != nil {
			t.Errorf("README example %d (starting %q): %v", i+1, first, err)
		}
	}
	t.Logf("adapted %d of %d Caddyfile examples", checked, len(blocks))
}
