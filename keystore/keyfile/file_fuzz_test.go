package keyfile

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

var (
	// hexRun finds what could be a hash in an error message.
	hexRun = regexp.MustCompile(`[0-9a-f]{64}`)
	// hashField is a "hash" field with a well-formed value.
	hashField = regexp.MustCompile(`"hash"\s*:\s*"sha256:[0-9a-f]{64}"`)
)

// hashesOnlyInHashFields reports whether every 64-hex-digit run of input
// stands as the value of a "hash" field, written plainly. Only then must an
// error not repeat it: an id or a permission may legitimately hold one, and
// be quoted.
func hashesOnlyInHashFields(input string) bool {
	if strings.Contains(input, `\`) {
		return false // an escape could spell a hash the checks below miss
	}
	plain := hashField.ReplaceAllString(input, "")
	return !hexRun.MatchString(strings.ToLower(plain))
}

// FuzzKeyFile: a key file that loads has unique ids, never two records
// answering to one hash, and every hash it holds finds its own key; its
// records, written out again, load to the same keys; the watcher's load
// (streamed, reusing a version's keys) agrees with a whole parse. A file
// that does not load fails with an error that names the file and never repeats a hash.
func FuzzKeyFile(f *testing.F) {
	if data, err := os.ReadFile("../../examples/keys.json"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		`{"keys": []}`,
		`{"keys": [{"id": "k_a", "hash": "sha256:` + strings.Repeat("ab", 32) + `", "role": "reader"}]}`,
		`{"keys": [{"id": "k_a", "hash": "sha256:` + strings.Repeat("ab", 32) + `", "role": "reader"},
		           {"id": "k_a", "hash": "sha256:` + strings.Repeat("cd", 32) + `", "role": "reader"}]}`,
		`{"keys": [{"id": "k_a", "hash": "sha256:` + strings.Repeat("ab", 32) + `", "role": "reader"},
		           {"id": "k_b", "hash": "sha256:` + strings.Repeat("cd", 32) + `", "role": "writer",
		            "previous_hashes": [{"hash": "sha256:` + strings.Repeat("ab", 32) + `", "valid_until": "2030-01-01T00:00:00Z"}]}]}`,
		`{"keys": [{"id": "k_c", "hash": "sha256:` + strings.Repeat("0f", 32) + `", "type": "prod", "role": "custom",
		            "permissions": ["GET /api/*", "* /v1/*"], "allowed_ips": ["10.0.0.0/8", "::1"], "services": ["*"],
		            "expires_at": "2027-01-01T00:00:00Z", "quota_per_day": 5, "rate": "3/s", "revoked": true,
		            "previous_hashes": [{"hash": "sha256:` + strings.Repeat("f0", 32) + `", "valid_until": "2026-12-01T00:00:00+02:00"},
		                                {"hash": "sha256:` + strings.Repeat("e1", 32) + `", "valid_until": "2026-12-01T00:00:00Z"}]}]}`,
		`{"keys": [{"id": "k_d", "hash": "sha256:` + strings.Repeat("AB", 32) + `", "role": "reader"}]}`,
		`{"keys": [{"id": "k_e", "hash": "sha256:` + strings.Repeat("ab", 32) + `", "role": "reader", "revokd": true}]}`,
		`{"keys": [{"id": "DEV_API_x", "hash": "sha256:` + strings.Repeat("ab", 32) + `", "role": "reader"}]}`,
		`{"keys": null}`, `{"keys": [null]}`, `{}`, ``, `[]`, `{"keys": []} {}`, `{"keys": [{"id": 1}]}`,
	} {
		f.Add([]byte(s))
	}

	path := filepath.Join(f.TempDir(), "keys.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		// Read as the watcher reads it, the same keys or the same error; and
		// again as a new version of itself, through a small buffer.
		if l := compareLoadsAt(t, path, data, nil); l != nil {
			defer func(b int) { loadBuffer = b }(loadBuffer)
			loadBuffer = 16
			compareLoadsAt(t, path, data, l)
			loadBuffer = 4 << 20
		}
		set, err := parseKeyFile("fuzz.json", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "key file fuzz.json: ") {
				t.Fatalf("the error does not name the file: %v", err)
			}
			if hashesOnlyInHashFields(string(data)) && hexRun.MatchString(err.Error()) {
				t.Fatalf("the error repeats a hash: %v", err)
			}
			if set != nil {
				t.Fatal("a set came back with the error")
			}
			return
		}
		checkSet(t, set)

		// Written out again, the records load to the same keys.
		records, err := keystore.ParseRecords(data)
		if err != nil {
			t.Fatalf("the file loaded, and its records do not parse: %v", err)
		}
		again, err := json.Marshal(map[string]any{"keys": records})
		if err != nil {
			t.Fatal(err)
		}
		set2, err := keystore.ParseAndValidate(again)
		if err != nil {
			t.Fatalf("the loaded records, written out again, do not load: %v", err)
		}
		if set2.Len() != set.Len() {
			t.Fatalf("%d keys, then %d", set.Len(), set2.Len())
		}
		for i, k := range set.Keys() {
			k2 := set2.Keys()[i]
			if k2.ID != k.ID || k2.Digest != k.Digest || k2.Role != k.Role || k2.Type != k.Type ||
				k2.Revoked != k.Revoked || !k2.ExpiresAt.Equal(k.ExpiresAt) || len(k2.Previous) != len(k.Previous) ||
				k2.QuotaPerDay != k.QuotaPerDay || k2.HasQuota != k.HasQuota || k2.Rate != k.Rate {
				t.Fatalf("key %q changed when written out and loaded again", k.ID)
			}
		}
	})
}

// checkSet asserts what every loaded key file guarantees.
func checkSet(t *testing.T, set *keystore.Set) {
	t.Helper()
	ids := map[string]bool{}
	digests := map[keystore.Digest]string{}
	for _, k := range set.Keys() {
		if strings.TrimSpace(k.ID) == "" || keystore.HasKnownPrefix(k.ID) {
			t.Fatalf("loaded a key with the id %q", k.ID)
		}
		if ids[k.ID] {
			t.Fatalf("two keys have the id %q", k.ID)
		}
		ids[k.ID] = true
		if k.Role < keystore.Reader || k.Role > keystore.Custom || k.Type > keystore.Prod {
			t.Fatalf("key %q: role %d, type %d", k.ID, k.Role, k.Type)
		}
		if k.Role == keystore.Custom && !k.HasPermissions() {
			t.Fatalf("key %q: custom without permissions", k.ID)
		}
		if k.HasQuota && k.QuotaPerDay < 0 {
			t.Fatalf("key %q: negative quota", k.ID)
		}
		if other, dup := digests[k.Digest]; dup {
			t.Fatalf("keys %q and %q answer to one hash", other, k.ID)
		}
		digests[k.Digest] = k.ID
		if m := set.Lookup(k.Digest); m.Key != k || m.Previous != nil {
			t.Fatalf("key %q: its hash does not find it", k.ID)
		}
		for i := range k.Previous {
			p := &k.Previous[i]
			if other, dup := digests[p.Digest]; dup {
				t.Fatalf("keys %q and %q answer to one hash", other, k.ID)
			}
			digests[p.Digest] = k.ID
			if m := set.Lookup(p.Digest); m.Key != k || m.Previous != p {
				t.Fatalf("key %q: its previous hash %d does not find it", k.ID, i)
			}
		}
	}
	if set.Len() != len(ids) {
		t.Fatalf("Len is %d, with %d keys", set.Len(), len(ids))
	}
}
