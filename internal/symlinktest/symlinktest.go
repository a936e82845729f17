// Package symlinktest holds the helpers of the tests that race writers of
// a key file behind a symbolic link: keystore/keyfile's (the function the
// commands and the admin API use) and command/'s (the built binary). It
// does not import keystore/keyfile, whose own tests use it.
package symlinktest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// KeyFile makes a key file in a folder of its own, with one key
// (k_victim, a dev reader), and a symbolic link to it elsewhere, as a
// deployment that points /etc/caddy/keys.json at a versioned file does. It
// returns the link and the target.
func KeyFile(t testing.TB) (link, target string) {
	t.Helper()
	dir := t.TempDir()
	target = filepath.Join(dir, "versions", "keys.json")
	link = filepath.Join(dir, "keys.json")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := keystore.Generate(keystore.Dev)
	if err != nil {
		t.Fatal(err)
	}
	victim := keystore.Record{ID: "k_victim", Hash: keystore.Sum(key).Encode(), Type: "dev", Role: "reader"}
	data, err := json.Marshal(map[string]any{"keys": []keystore.Record{victim}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link, target
}

// CheckNothingLost checks the keys read from the key file after the keys
// ids were added and k_victim revoked: every key must be there, the
// revocation kept, and the link still a link.
func CheckNothingLost(t testing.TB, round int, link string, keys []*keystore.Key, ids []string) {
	t.Helper()
	have := map[string]*keystore.Key{}
	for _, k := range keys {
		have[k.ID] = k
	}
	for _, id := range ids {
		if have[id] == nil {
			t.Errorf("round %d: key %s was lost (%d of %d keys kept)", round, id, len(keys), len(ids)+1)
		}
	}
	if v := have["k_victim"]; v == nil || !v.Revoked {
		t.Errorf("round %d: the revocation of k_victim was lost", round)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("round %d: the link was replaced by a file", round)
	}
}
