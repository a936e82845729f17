package apikey

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// symlinkedKeyFile makes a key file in a folder of its own, with one key
// (k_victim), and a symbolic link to it elsewhere, as a deployment that
// points /etc/caddy/keys.json at a versioned file does. It returns the link
// and the target.
func symlinkedKeyFile(t *testing.T) (link, target string) {
	t.Helper()
	dir := t.TempDir()
	target = filepath.Join(dir, "versions", "keys.json")
	link = filepath.Join(dir, "keys.json")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	victim := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_victim", Type: "dev", Role: "reader"})
	writeKeyFileAtomic(t, target, victim.Record)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link, target
}

// checkNothingLost reads the key file after n added keys and a revocation
// of k_victim: every key must be there, the revocation kept, and the link
// still a link.
func checkNothingLost(t *testing.T, round int, link, target string, ids []string) {
	t.Helper()
	set, err := keyfile.LoadFile(target)
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	have := map[string]*keystore.Key{}
	for _, k := range set.Keys() {
		have[k.ID] = k
	}
	for _, id := range ids {
		if have[id] == nil {
			t.Errorf("round %d: key %s was lost (%d of %d keys kept)", round, id, set.Len(), len(ids)+1)
		}
	}
	if v := have["k_victim"]; v == nil || !v.Revoked {
		t.Errorf("round %d: the revocation of k_victim was lost", round)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("round %d: the link was replaced by a file", round)
	}
}

// TestSymlinkedKeyFileWritersTakeTurns: writers that name a symbolic link
// and writers that name its target lock the same file, so nothing is lost
// when they run at once: ten keys added through the link, ten through the
// target and a revocation through the link, fifty times over, in this
// process with the function the commands and the admin API use.
func TestSymlinkedKeyFileWritersTakeTurns(t *testing.T) {
	add := func(path, id string) error {
		k, err := keystore.Generate(keystore.Dev)
		if err != nil {
			return err
		}
		return keyfile.EditKeyFile(path, func(kf *keyfile.KeyFile) error {
			return kf.Add(keystore.Record{ID: id, Type: "dev", Role: "reader", Hash: keystore.Sum(k).Encode()})
		})
	}
	for round := range 50 {
		link, target := symlinkedKeyFile(t)
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
		run(func() error { return RevokeKey(context.Background(), keyfile.NewStore(link), "k_victim") })
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

// TestSymlinkedKeyFileCommandsTakeTurns is the same race with the built
// binary: `caddy apikey new` through the link and through the target, and
// `caddy apikey revoke` through the link, all at once.
func TestSymlinkedKeyFileCommandsTakeTurns(t *testing.T) {
	for round := range 3 {
		link, target := symlinkedKeyFile(t)
		var ids []string
		var wg sync.WaitGroup
		run := func(args ...string) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, errOut, code := cli(t, "", args...); code != 0 {
					t.Errorf("round %d: %v: exit %d: %s", round, args[:1], code, errOut)
				}
			}()
		}
		run("revoke", "--keys", link, "--id", "k_victim")
		for i := range 10 {
			viaLink, viaTarget := fmt.Sprintf("k_link_%d", i), fmt.Sprintf("k_target_%d", i)
			ids = append(ids, viaLink, viaTarget)
			run("new", "--keys", link, "--type", "dev", "--role", "reader", "--id", viaLink)
			run("new", "--keys", target, "--type", "dev", "--role", "reader", "--id", viaTarget)
		}
		wg.Wait()
		checkNothingLost(t, round, link, target, ids)
	}
}
