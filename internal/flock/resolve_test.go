//go:build unix

package flock

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResolveFollowsDanglingLinks: a link whose target does not exist yet
// resolves to that target (a relative one read from the link's folder),
// through chains of links, to the same path the target has once it exists;
// a loop of links resolves to the path as given.
func TestResolveFollowsDanglingLinks(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"real", "race", "other"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(dir, "real", "keys.json")
	link := filepath.Join(dir, "race", "link.json")
	chain := filepath.Join(dir, "other", "chain.json")
	viaFolder := filepath.Join(dir, "folder-link", "keys.json") // a link to real/ as the folder
	mustLink(t, filepath.Join("..", "real", "keys.json"), link)
	mustLink(t, filepath.Join("..", "race", "link.json"), chain)
	mustLink(t, "real", filepath.Join(dir, "folder-link"))

	for _, p := range []string{target, link, chain, viaFolder} {
		if got := Resolve(p); got != target {
			t.Errorf("before the target exists: Resolve(%s) = %s, want %s", p, got, target)
		}
	}
	if err := os.WriteFile(target, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{target, link, chain, viaFolder} {
		if got := Resolve(p); got != target {
			t.Errorf("once the target exists: Resolve(%s) = %s, want %s", p, got, target)
		}
	}

	// A missing file in a missing folder is returned as given.
	missing := filepath.Join(dir, "no", "such", "keys.json")
	if got := Resolve(missing); got != missing {
		t.Errorf("Resolve(%s) = %s", missing, got)
	}
	// A link into a missing folder leads there (the write makes the folder).
	intoMissing := filepath.Join(dir, "race", "into-missing.json")
	mustLink(t, filepath.Join("..", "later", "keys.json"), intoMissing)
	if got, want := Resolve(intoMissing), filepath.Join(dir, "later", "keys.json"); got != want {
		t.Errorf("Resolve(%s) = %s, want %s", intoMissing, got, want)
	}
	// A loop ends, and leaves the path as it was.
	a, b := filepath.Join(dir, "race", "a"), filepath.Join(dir, "race", "b")
	mustLink(t, "b", a)
	mustLink(t, "a", b)
	if got := Resolve(a); got != a {
		t.Errorf("a loop: Resolve(%s) = %s", a, got)
	}
}

func mustLink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
