package gatewaytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Key is a generated key and its record. Failure messages name
// Record.ID, never Secret.
type Key struct {
	Secret string
	Record keystore.Record
}

// NewKey generates a key of a type and completes rec with its hash.
func NewKey(t testing.TB, typ keystore.Type, rec keystore.Record) Key {
	t.Helper()
	secret, err := keystore.Generate(typ)
	if err != nil {
		t.Fatal(err)
	}
	rec.Hash = keystore.Sum(secret).Encode()
	return Key{Secret: secret, Record: rec}
}

// Bearer is an Authorization header carrying the key, as name, value for
// Send.
func (k Key) Bearer() []string { return []string{"Authorization", "Bearer " + k.Secret} }

// WriteKeyFile writes records as a key file in a folder of the test's own
// and returns its path.
func WriteKeyFile(t testing.TB, records ...keystore.Record) string {
	t.Helper()
	data, err := json.MarshalIndent(map[string]any{"keys": records}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
