package gatewaytest

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the caddyfile adapter
)

// Adapt adapts a Caddyfile to Caddy's JSON, as `caddy adapt` does.
func Adapt(caddyfile string) ([]byte, error) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	return cfg, err
}

// Start adapts a Caddyfile and runs it in this process until the test
// ends; the test fails when it does not load.
func Start(t testing.TB, caddyfile string) {
	t.Helper()
	if err := Load(caddyfile); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
}

// Load adapts a Caddyfile and loads it in place of the running config (a
// reload when one runs). Addresses on a port from Port are served from the
// socket Port holds.
func Load(caddyfile string) error {
	cfg, err := Adapt(caddyfile)
	if err != nil {
		return err
	}
	return LoadJSON(cfg)
}

// Config is the JSON config Load runs for a Caddyfile: adapted, with the
// addresses on ports from Port handed over. POST it to the admin
// endpoint's /load (as application/json) to reload through the admin API.
func Config(caddyfile string) ([]byte, error) {
	cfg, err := Adapt(caddyfile)
	if err != nil {
		return nil, err
	}
	return handOver(cfg)
}

// LoadJSON loads a JSON config as Load does.
func LoadJSON(cfg []byte) error {
	cfg, err := handOver(cfg)
	if err != nil {
		return err
	}
	err = caddy.Load(cfg, true)
	// A reload stops the old servers, which close their idle connections; a
	// kept-alive connection can still look open to the shared client for a
	// moment and meet EOF. Start the next request on a fresh connection.
	Client.CloseIdleConnections()
	return err
}

// StartJSON is Start for a JSON config, given as a value to marshal.
func StartJSON(t testing.TB, doc any) {
	t.Helper()
	cfg, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := LoadJSON(cfg); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
}

// Stop stops the running config; stopping when none runs is fine, so a
// test may stop Caddy early and still have Start's cleanup call it.
func Stop() error { return caddy.Stop() }
