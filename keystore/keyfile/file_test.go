package keyfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadFileAndLookup(t *testing.T) {
	cur, curHash := hashOf(t, keystore.Dev)
	old, oldHash := hashOf(t, keystore.Dev)
	other, _ := hashOf(t, keystore.Prod)
	path := writeFile(t, `{"keys": [
		{"id": "k_one", "name": "One", "hash": "`+curHash+`", "role": "writer", "services": ["ollama"],
		 "previous_hashes": [{"hash": "`+oldHash+`", "valid_until": "2030-01-01T00:00:00Z"}]}
	]}`)
	fs := &FileSource{Path: path}
	if err := fs.Provision(caddyContext()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Cleanup() })
	m, err := fs.Lookup(context.Background(), keystore.Sum(cur))
	if err != nil || m.Key == nil || m.Key.ID != "k_one" || m.Previous != nil {
		t.Fatalf("current key: %+v, %v", m, err)
	}
	m, _ = fs.Lookup(context.Background(), keystore.Sum(old))
	if m.Key == nil || m.Key.ID != "k_one" || m.Previous == nil {
		t.Fatalf("previous key: %+v", m)
	}
	if !m.Previous.ValidUntil.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("valid_until = %v", m.Previous.ValidUntil)
	}
	if m, _ := fs.Lookup(context.Background(), keystore.Sum(other)); m.Key != nil {
		t.Fatal("an unknown key matched")
	}
	if len(fs.Keys()) != 1 {
		t.Errorf("Keys() = %d keys", len(fs.Keys()))
	}
}

// TestLoadFileErrors checks that a bad key file fails with a message that
// names the file, the record and the field.
func TestLoadFileErrors(t *testing.T) {
	_, h1 := hashOf(t, keystore.Dev)
	_, h2 := hashOf(t, keystore.Dev)
	rec := func(id, hash, extra string) string {
		return `{"id": "` + id + `", "hash": "` + hash + `", "role": "reader"` + extra + `}`
	}
	for name, c := range map[string]struct{ content, want string }{
		"empty file":    {``, "the file is empty"},
		"syntax":        {"{\"keys\": [\n  {\"id\": \"a\",, }\n]}", "line 2, column"},
		"no keys array": {`{"kyes": []}`, `unknown top-level field "kyes"`},
		"not an object": {`[]`, `must hold one JSON object`},
		"keys not list": {`{"keys": {}}`, `"keys" must be an array of key records, not object`},
		"trailing data": {`{"keys": []} {}`, "after the top-level object"},
		"duplicate id": {`{"keys": [` + rec("k_a", h1, "") + `,` + rec("k_a", h2, "") + `]}`,
			`keys[1] (id "k_a"): id: duplicates keys[0]`},
		"duplicate hash": {`{"keys": [` + rec("k_a", h1, "") + `,` + rec("k_b", h1, "") + `]}`,
			`keys[1] (id "k_b"): hash: the same hash is already used by keys[0] (id "k_a")`},
		"previous hash reused": {`{"keys": [` + rec("k_a", h1, "") + `,` + rec("k_b", h2, `, "previous_hashes": [{"hash": "`+h1+`", "valid_until": "2030-01-01T00:00:00Z"}]`) + `]}`,
			`keys[1] (id "k_b"): previous_hashes[0].hash: the same hash is already used by keys[0] (id "k_a")`},
		"bad hash":      {`{"keys": [` + rec("k_a", "sha256:00", "") + `]}`, `keys[0] (id "k_a"): hash: must be`},
		"unknown role":  {`{"keys": [{"id": "k_a", "hash": "` + h1 + `", "role": "owner"}]}`, `keys[0] (id "k_a"): role: unknown role "owner"`},
		"bad cidr":      {`{"keys": [` + rec("k_a", h1, `, "allowed_ips": ["10.0.0.0/40"]`) + `]}`, `keys[0] (id "k_a"): allowed_ips[0]: "10.0.0.0/40" is not a valid CIDR`},
		"bad time":      {`{"keys": [` + rec("k_a", h1, `, "expires_at": "tomorrow"`) + `]}`, `keys[0] (id "k_a"): expires_at: "tomorrow" is not an RFC 3339 time`},
		"missing id":    {`{"keys": [` + rec("k_a", h1, "") + `, {"hash": "` + h2 + `", "role": "reader"}]}`, `keys[1]: id: is required`},
		"unknown field": {`{"keys": [` + rec("k_a", h1, `, "revokd": true`) + `]}`, `keys[0] (id "k_a"): revokd: unknown field`},
		"wrong type":    {`{"keys": [` + rec("k_a", h1, `, "revoked": "yes"`) + `]}`, `keys[0] (id "k_a"): revoked: must be true or false, not string`},
	} {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, c.content)
			_, err := LoadFile(path)
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.HasPrefix(err.Error(), "key file "+path+": ") {
				t.Errorf("error does not start with the file: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			for _, h := range []string{h1, h2} {
				if strings.Contains(err.Error(), strings.TrimPrefix(h, "sha256:")) {
					t.Error("error holds a hash")
				}
			}
		})
	}
	if _, err := LoadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
}

// TestWatcherSeesSameSizeRewrite: an in-place rewrite of the same size
// within one tick of the filesystem clock is still seen.
func TestWatcherSeesSameSizeRewrite(t *testing.T) {
	a, aHash := hashOf(t, keystore.Dev)
	b, bHash := hashOf(t, keystore.Dev)
	path := writeFile(t, `{"keys": [{"id": "k_one", "hash": "`+aHash+`", "role": "reader"}]}`)
	info, _ := os.Stat(path)
	fs := &FileSource{Path: path}
	if err := fs.Provision(caddyContext()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Cleanup() })

	// Same size, same inode, and the old modification time put back.
	if err := os.WriteFile(path, []byte(`{"keys": [{"id": "k_one", "hash": "`+bHash+`", "role": "reader"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path, info.ModTime(), info.ModTime())
	fs.Reload()
	if m, _ := fs.Lookup(context.Background(), keystore.Sum(b)); m.Key == nil {
		t.Fatal("the same-size rewrite was missed")
	}
	if m, _ := fs.Lookup(context.Background(), keystore.Sum(a)); m.Key != nil {
		t.Fatal("the old version is still in force")
	}
}

func TestDiff(t *testing.T) {
	mk := func(recs ...keystore.Record) *keystore.Set {
		s, err := keystore.NewSet(recs)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, h1 := hashOf(t, keystore.Dev)
	_, h2 := hashOf(t, keystore.Dev)
	_, h3 := hashOf(t, keystore.Dev)
	_, h4 := hashOf(t, keystore.Dev)
	old := mk(
		keystore.Record{ID: "k_same", Hash: h1, Role: "reader"},
		keystore.Record{ID: "k_revoke", Hash: h2, Role: "reader"},
		keystore.Record{ID: "k_gone", Hash: h3, Role: "reader"},
	)
	next := mk(
		keystore.Record{ID: "k_same", Hash: h4, Role: "writer"},
		keystore.Record{ID: "k_revoke", Hash: h2, Role: "reader", Revoked: true},
		keystore.Record{ID: "k_new", Hash: h3, Role: "reader"},
	)
	got := fmt.Sprint(keystore.Diff(old, next))
	want := "[{key.removed k_gone} {key.created k_new} {key.revoked k_revoke} {key.rotated k_same} {key.updated k_same}]"
	if got != want {
		t.Errorf("Diff = %s\nwant   %s", got, want)
	}
	if len(keystore.Diff(next, next)) != 0 {
		t.Error("a set differs from itself")
	}
}
