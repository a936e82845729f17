package gatewaytest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSourcesSumFollowsWhatIsBuilt: the built binary is found again by the
// sum of its sources; a change to a Go file or to something the portal
// embeds must be a new binary, a change to a test or a doc must not.
func TestSourcesSumFollowsWhatIsBuilt(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		path := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/x\n")
	write("x.go", "package x\n")
	write("x_test.go", "package x\n")
	write("portal/templates/page.html", "<p>one</p>")
	write("portal/assets/site.css", "p {}")
	write("README.md", "one")
	sum := func() string {
		t.Helper()
		s, err := sourcesSum(root)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	last := sum()
	for _, c := range []struct {
		file, text string
		built      bool
	}{
		{"portal/templates/page.html", "<p>two</p>", true},
		{"portal/assets/site.css", "p { color: red }", true},
		{"x.go", "package x\n\nconst C = 1\n", true},
		{"x_test.go", "package x\n\nconst T = 1\n", false},
		{"README.md", "two", false},
	} {
		write(c.file, c.text)
		now := sum()
		if changed := now != last; changed != c.built {
			t.Errorf("a change to %s changed the sum: %v, want %v", c.file, changed, c.built)
		}
		last = now
	}
}
