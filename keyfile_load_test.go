package apikey

// A running Caddy and its key file: what makes the load fail, with what
// error, and an edit the watcher must still see. (The key file's own
// behaviour, without Caddy, is tested in keystore/keyfile.)

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestMissingKeyFileError: a first start whose key file is not there yet
// fails the load with one line that names the file and the command that
// creates it, not a chain ending in "open …: no such file or directory".
func TestMissingKeyFileError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "keys.json")
	err := gatewaytest.Load(gatewaytest.Site{Port: gatewaytest.Port(t), KeyFile: path}.Caddyfile())
	if err == nil {
		_ = gatewaytest.Stop()
		t.Fatal("Caddy loaded a config whose key file does not exist")
	}
	msg := err.Error()
	// Caddy puts the module path in front ("loading http app module: …");
	// what the plugin says starts at "key file".
	_, ours, ok := strings.Cut(msg, "key file "+path)
	if !ok {
		t.Fatalf("the error does not name the key file: %s", msg)
	}
	for _, want := range []string{"does not exist", "caddy apikey new --keys " + path} {
		if !strings.Contains(ours, want) {
			t.Errorf("the error lacks %q: %s", want, msg)
		}
	}
	for _, bad := range []string{"no such file or directory", "open " + path} {
		if strings.Contains(msg, bad) {
			t.Errorf("the error still says %q: %s", bad, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("the error is more than one line: %q", msg)
	}
}

// TestKeyFileOverTheCapFailsTheLoad: Caddy refuses a key file over the cap
// when the config loads, naming the file and the cap.
func TestKeyFileOverTheCapFailsTheLoad(t *testing.T) {
	big := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, capped.KeyFile+1); err != nil { // sparse: it takes no room on disk
		t.Fatal(err)
	}
	err := gatewaytest.Load(gatewaytest.Site{Port: gatewaytest.Port(t), KeyFile: big}.Caddyfile())
	if err == nil {
		gatewaytest.Stop()
		t.Fatal("a key file over the cap loaded")
	}
	if !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), capped.Size(capped.KeyFile)) {
		t.Errorf("the error does not name the file and the cap: %v", err)
	}
}

// TestKeyFileIDsThatDoNotShowAreRefused: Caddy refuses to load a key file
// with an id holding a character that does not show; the error names the
// file, the record and the field. (caddy apikey new and import refusing
// such ids is command/'s TestCLIRefusesIDsThatDoNotShow.)
func TestKeyFileIDsThatDoNotShowAreRefused(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw", Type: "dev", Role: "reader", Services: []string{"*"}})
	twin := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw\u200b", Type: "dev", Role: "reader", Services: []string{"*"}})
	bad := gatewaytest.WriteKeyFile(t, k.Record, twin.Record)

	err := gatewaytest.Load(gatewaytest.Site{Port: gatewaytest.Port(t), KeyFile: bad, Apikey: "counters memory", Handler: `respond "admitted"`}.Caddyfile())
	if err == nil {
		_ = gatewaytest.Stop()
		t.Fatal("Caddy loaded a key file with the id k_zw and a zero-width space")
	}
	for _, want := range []string{bad, "keys[1]", "id:", "U+200B"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("load error does not name %q: %v", want, err)
		}
	}
}

// TestKeyFileEditInPlaceKeepingSizeAndTime: an edit in place that keeps the
// file's size and puts its modification time back (os.Chtimes, touch -d)
// is seen by a running Caddy, through the file's change time, within the
// watcher's poll, as any other change.
func TestKeyFileEditInPlaceKeepingSizeAndTime(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_inplace", Role: "reader", Services: []string{"*"}})
	path := gatewaytest.WriteKeyFile(t, key.Record)
	record := fmt.Sprintf(`{"keys": [{"id": "k_inplace", "hash": %q, "role": "reader", "services": ["*"]%%s}]}`, key.Record.Hash)
	// The same record revoked, at the same size (white space pads it).
	before := []byte(fmt.Sprintf(record, ""))
	after := []byte(fmt.Sprintf(record, `, "revoked": true`))
	before = append(before, bytes.Repeat([]byte(" "), len(after)-len(before))...)
	if err := os.WriteFile(path, before, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	url := gatewaytest.StartKeyFile(t, path)
	if res := gatewaytest.Send(t, http.MethodGet, url, "Authorization", "Bearer "+key.Secret); res.Status != http.StatusOK {
		t.Fatalf("before the edit: %d, want 200", res.Status)
	}

	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(after, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(path); info.Size() != int64(len(before)) || !info.ModTime().Equal(old) {
		t.Fatalf("the edit changed the size or the time: %d %v", info.Size(), info.ModTime())
	}

	// The README's bound for a change: within a second (two polls).
	deadline := time.Now().Add(3 * time.Second)
	for {
		res := gatewaytest.Send(t, http.MethodGet, url, "Authorization", "Bearer "+key.Secret)
		if res.Status == http.StatusUnauthorized {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 s after the edit the revoked key still gets %d", res.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
