//go:build unix

package keyfile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/symlinktest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestDanglingLinkRace: a key file named through a link whose target does
// not exist yet (race/link.json -> ../real/keys.json), through a second link
// to that link, and through the target itself, by 8 writers each at once.
// Every writer locks and writes the target, which the first creates: all 24
// records end up in real/keys.json, and both links are still links. (Before,
// a dangling link was written as a file of its own: the links were replaced
// by regular files and the records split over three files.)
func TestDanglingLinkRace(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "keys.json")
	link := filepath.Join(dir, "race", "link.json")
	link2 := filepath.Join(dir, "other", "link2.json")
	for _, d := range []string{"real", "race", "other"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join("..", "real", "keys.json"), link); err != nil { // relative
		t.Fatal(err)
	}
	if err := os.Symlink(link, link2); err != nil { // absolute, to the first link
		t.Fatal(err)
	}

	const each = 8
	var wg sync.WaitGroup
	errs := make(chan error, 3*each)
	for n, path := range []string{link, real, link2} {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, hash := hashOf(t, keystore.Dev)
				rec := keystore.Record{ID: fmt.Sprintf("k_%d_%d", n, i), Hash: hash, Type: "dev", Role: "reader"}
				if err := NewStore(path).Create(context.Background(), rec); err != nil {
					errs <- fmt.Errorf("%s: %w", path, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkDanglingLinkRace(t, real, 3*each, link, link2)
}

// checkDanglingLinkRace checks that real is a regular file holding want
// records with distinct ids and that each of links is still a link to it.
func checkDanglingLinkRace(t *testing.T, real string, want int, links ...string) {
	t.Helper()
	if info, err := os.Lstat(real); err != nil || !info.Mode().IsRegular() {
		t.Fatalf("the target is not a regular file: %v", err)
	}
	data, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Keys []keystore.Record `json:"keys"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range file.Keys {
		ids[r.ID] = true
	}
	if len(file.Keys) != want || len(ids) != want {
		t.Errorf("the target holds %d records (%d ids), want %d", len(file.Keys), len(ids), want)
	}
	for _, l := range links {
		if info, err := os.Lstat(l); err != nil || info.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer a link (%v)", l, err)
			continue
		}
		if got, err := filepath.EvalSymlinks(l); err != nil || got != real {
			t.Errorf("%s now leads to %q (%v), want %s", l, got, err, real)
		}
	}
}

// checkNothingLost reads the key file after n added keys and a revocation
// of k_victim: every key must be there, the revocation kept, and the link
// still a link.
func checkNothingLost(t *testing.T, round int, link, target string, ids []string) {
	t.Helper()
	set, err := LoadFile(target)
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	symlinktest.CheckNothingLost(t, round, link, set.Keys(), ids)
}

// TestSymlinkedKeyFileWritersTakeTurns: writers that name a symbolic link
// and writers that name its target lock the same file, so nothing is lost
// when they run at once: ten keys added through the link, ten through the
// target and a revocation through the link, fifty times over, in this
// process with the function the commands and the admin API use.
func TestSymlinkedKeyFileWritersTakeTurns(t *testing.T) {
	add := func(path, id string) error {
		rec := newRecord(t, id)
		return EditKeyFile(path, func(kf *KeyFile) error { return kf.Add(rec) })
	}
	for round := range 50 {
		link, target := symlinktest.KeyFile(t)
		var ids []string
		var wg sync.WaitGroup
		start := make(chan struct{})
		run := func(f func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := f(); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		run(func() error { return keystore.Revoke(context.Background(), NewStore(link), "k_victim", nil) })
		for i := range 10 {
			viaLink, viaTarget := fmt.Sprintf("k_link_%d", i), fmt.Sprintf("k_target_%d", i)
			ids = append(ids, viaLink, viaTarget)
			run(func() error { return add(link, viaLink) })
			run(func() error { return add(target, viaTarget) })
		}
		close(start)
		wg.Wait()
		checkNothingLost(t, round, link, target, ids)
		if t.Failed() {
			return
		}
	}
}
