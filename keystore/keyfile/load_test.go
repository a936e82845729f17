package keyfile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// sameKeys fails unless got and want hold the same keys in the same order.
func sameKeys(t *testing.T, got, want *keystore.Set) {
	t.Helper()
	if got.Len() != want.Len() {
		t.Fatalf("%d keys, want %d", got.Len(), want.Len())
	}
	for i, k := range got.Keys() {
		w := want.Keys()[i]
		if k.ID != w.ID || k.Digest != w.Digest || k.Revoked != w.Revoked || k.Role != w.Role || k.Type != w.Type ||
			k.Name != w.Name || len(k.Previous) != len(w.Previous) || k.HasQuota != w.HasQuota || k.QuotaPerDay != w.QuotaPerDay ||
			fmt.Sprint(k.Services()) != fmt.Sprint(w.Services()) {
			t.Fatalf("keys[%d]: %+v, want %+v", i, k, w)
		}
		if m := got.Lookup(k.Digest); m.Key != k {
			t.Fatalf("keys[%d] (%s): its hash does not find it", i, k.ID)
		}
	}
	if d := keystore.Diff(want, got); len(d) != 0 {
		t.Fatalf("differs from the whole parse: %v", d)
	}
}

// compareLoads loads data as a file, with prev, and as ParseAndValidate
// does: both must accept it, or reject it with the same message.
func compareLoads(t *testing.T, data []byte, prev *loaded) *loaded {
	t.Helper()
	return compareLoadsAt(t, filepath.Join(t.TempDir(), "keys.json"), data, prev)
}

// compareLoadsAt is compareLoads through the file at path.
func compareLoadsAt(t *testing.T, path string, data []byte, prev *loaded) *loaded {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, _, err := loadKeyFile("keys.json", path, prev, true)
	want, wantErr := parseKeyFile("keys.json", data)
	if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
		t.Fatalf("loaded with %v, parsed whole with %v", err, wantErr)
	}
	if err != nil {
		if l != nil {
			t.Fatal("a version came back with the error")
		}
		return nil
	}
	sameKeys(t, l.set, want)
	if l.sums != nil && len(l.sums) != l.set.Len() {
		t.Fatalf("%d fingerprints for %d keys", len(l.sums), l.set.Len())
	}
	return l
}

func lines(records []string) []byte {
	return []byte("{\n  \"keys\": [\n    " + strings.Join(records, ",\n    ") + "\n  ]\n}\n")
}

// TestReloadReusesUnchangedKeys: a new version of a file takes the compiled
// key of every record the change left as it was (by its bytes), compiles
// the others, and loads to what a whole parse makes of it, whatever the
// change: one record changed, added, removed, records moved about, a file
// rewritten in another layout, or read through a small buffer.
func TestReloadReusesUnchangedKeys(t *testing.T) {
	record := func(i int, extra string) string {
		return fmt.Sprintf(`{"id":"k_%04d","hash":"sha256:%064x","type":"dev","role":"reader","services":["ollama"]%s}`, i, i+1, extra)
	}
	const n = 600 // past the parallel compile and the misses before the sorted index
	base := make([]string, n)
	for i := range base {
		base[i] = record(i, "")
	}
	for _, buffer := range []int{4 << 20, 64} {
		t.Run(fmt.Sprintf("buffer %d", buffer), func(t *testing.T) {
			defer func(b int) { loadBuffer = b }(loadBuffer)
			loadBuffer = buffer
			first := compareLoads(t, lines(base), nil)
			if len(first.sums) != n {
				t.Fatalf("%d fingerprints", len(first.sums))
			}
			for _, c := range []struct {
				name    string
				records []string
				reused  int
				moved   bool // records moved: those missed before the sorted index are compiled anew
			}{
				{"unchanged", base, n, false},
				{"one revoked", slices.Concat(base[:300], []string{record(300, `,"revoked":true`)}, base[301:]), n - 1, false},
				{"one added at the end", append(slices.Clone(base), record(n, "")), n, false},
				{"one added at the start", append([]string{record(n, "")}, base...), n, false},
				{"one removed", slices.Concat(base[:10], base[11:]), n - 1, false},
				{"a hundred removed", slices.Concat(base[:100], base[200:]), n - 100, true},
				{"reversed", reversed(base), n, true},
				{"every other one changed", everyOther(base, func(i int) string { return record(i, `,"name":"x"`) }), n / 2, false},
			} {
				t.Run(c.name, func(t *testing.T) {
					next := compareLoads(t, lines(c.records), first)
					reused := 0
					prevKeys := map[*keystore.Key]bool{}
					for _, k := range first.set.Keys() {
						prevKeys[k] = true
					}
					for _, k := range next.set.Keys() {
						if prevKeys[k] {
							reused++
						}
					}
					if reused != c.reused && !(c.moved && reused >= c.reused-missesBeforeIndex) {
						t.Errorf("%d keys reused, want %d", reused, c.reused)
					}
					// Diff skips the keys both versions share at either end:
					// the same changes as between keys compiled apart.
					apart, err := keystore.ParseAndValidate(lines(base))
					if err != nil {
						t.Fatal(err)
					}
					if got, want := fmt.Sprint(keystore.Diff(first.set, next.set)), fmt.Sprint(keystore.Diff(apart, next.set)); got != want {
						t.Errorf("changes %s, want %s", got, want)
					}
				})
			}
			// Another layout: the same records, other bytes; compiled anew.
			spaced := []byte(strings.ReplaceAll(string(lines(base)), `","`, `", "`))
			next := compareLoads(t, spaced, first)
			if next.set.Keys()[0] == first.set.Keys()[0] {
				t.Error("a record written otherwise kept its key")
			}
		})
	}
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

func everyOther(s []string, change func(i int) string) []string {
	r := slices.Clone(s)
	for i := 0; i < len(r); i += 2 {
		r[i] = change(i)
	}
	return r
}

// TestReloadRejectsAsBefore: a new version with a bad record, or an id or
// hash that another record has (reused or not), is rejected with the
// message a whole parse gives, and nothing of it is kept.
func TestReloadRejectsAsBefore(t *testing.T) {
	record := func(i, h int, extra string) string {
		return fmt.Sprintf(`{"id":"k_%04d","hash":"sha256:%064x","role":"reader"%s}`, i, h, extra)
	}
	base := make([]string, 300)
	for i := range base {
		base[i] = record(i, i+1, "")
	}
	first := compareLoads(t, lines(base), nil)
	for name, records := range map[string][]string{
		"unknown field":      slices.Concat(base[:5], []string{record(5, 6, `,"revokd":true`)}, base[6:]),
		"bad role":           slices.Concat(base[:5], []string{strings.Replace(record(5, 6, ""), "reader", "boss", 1)}, base[6:]),
		"duplicate id":       append(slices.Clone(base), record(7, 9999, "")),
		"duplicate hash":     append(slices.Clone(base), record(9999, 8, "")),
		"a record twice":     append(slices.Clone(base), base[3]),
		"previous hash used": append(slices.Clone(base), record(9999, 9999, `,"previous_hashes":[{"hash":"sha256:`+fmt.Sprintf("%064x", 2)+`","valid_until":"2030-01-01T00:00:00Z"}]`)),
		"bad JSON":           append(slices.Clone(base), `{"id":"k_x",}`),
		"trailing comma":     append(slices.Clone(base), ``),
	} {
		t.Run(name, func(t *testing.T) {
			if l := compareLoads(t, lines(records), first); l != nil {
				t.Fatal("accepted")
			}
		})
	}
	for name, data := range map[string]string{
		"Keys":          `{"Keys": [` + base[0] + `]}`,
		"keys twice":    `{"keys": [` + base[0] + `], "keys": [` + base[1] + `]}`,
		"closing brace": `{"keys": [` + base[0] + `]}}`,
		"after":         `{"keys": [` + base[0] + `]} x`,
		"empty":         `{"keys": []}`,
		"nothing":       ``,
		"null record":   `{"keys": [null]}`,
	} {
		t.Run(name, func(t *testing.T) {
			compareLoads(t, []byte(data), first)
		})
	}
}

// TestFileVersion: a key file says its format's version, {"version": 1,
// "keys": [...]}, or none (version 1, the files written before); a version
// 1 file loads on the fast path; a newer version, or a version that is not
// a whole number, is refused with a message that says so, by the fast load
// and the whole parse alike; the gateway's edits write the version.
func TestFileVersion(t *testing.T) {
	record := `{"id":"k_0001","hash":"sha256:` + strings.Repeat("ab", 32) + `","role":"reader"}`
	for _, data := range []string{
		`{"version": 1, "keys": [` + record + `]}`,
		"{\n  \"version\" : 1 ,\n  \"keys\": [\n    " + record + "\n  ]\n}\n",
	} {
		l := compareLoads(t, []byte(data), nil)
		if l == nil || l.sums == nil || l.set.Len() != 1 {
			t.Fatalf("%q: not loaded record by record", data)
		}
	}
	// Valid, but not the plain shape: the whole parse reads it.
	if l := compareLoads(t, []byte(`{"keys": [`+record+`], "version": 1}`), nil); l == nil || l.set.Len() != 1 {
		t.Fatal("a version after the keys was refused")
	}
	for data, want := range map[string]string{
		`{"version": 2, "keys": [` + record + `]}`:  `"version" is 2: the file was written by a newer caddy-apikey, and this one reads key files up to version 1`,
		`{"version": 10, "keys": [` + record + `]}`: `"version" is 10: the file was written by a newer caddy-apikey`,
		`{"version": 0, "keys": []}`:                `"version" must be a whole number from 1, not 0`,
		`{"version": "1", "keys": []}`:              `"version" must be a whole number from 1, not "1"`,
		`{"version": 1.5, "keys": []}`:              `"version" must be a whole number from 1, not 1.5`,
		`{"keys": [` + record + `], "version": 2}`:  `"version" is 2`,
	} {
		path := filepath.Join(t.TempDir(), "keys.json")
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := loadKeyFile("keys.json", path, nil, false)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "key file keys.json: ") {
			t.Errorf("%s: %v; want an error naming the file and saying %s", data, err, want)
		}
		compareLoads(t, []byte(data), nil) // the fast load and the whole parse agree
	}

	// An edit of a file without a version writes one, first; an edit of a
	// newer file writes nothing.
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(`{"keys": [`+record+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EditKeyFile(path, func(kf *KeyFile) error { return kf.Find("k_0001").Set("name", "n") }); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "{\n  \"version\": 1,\n  \"keys\": [") {
		t.Errorf("edited file starts %.40q, want the version first", data)
	}
	newer := []byte(`{"version": 2, "keys": [` + record + `]}`)
	os.WriteFile(path, newer, 0o600)
	if err := EditKeyFile(path, func(*KeyFile) error { return nil }); err == nil || !strings.Contains(err.Error(), "left as it is") {
		t.Errorf("edit of a newer file: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != string(newer) {
		t.Error("a newer file was rewritten")
	}
	fresh := filepath.Join(t.TempDir(), "new.json")
	if err := EditKeyFile(fresh, func(*KeyFile) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(fresh); !strings.Contains(string(data), `"version": 1`) {
		t.Errorf("a new file: %s", data)
	}
}
