package apikey

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

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
