package apikey

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestBadKeyFileFailsConfigLoad: a broken key file stops the config from
// loading, with an error naming the file, the record and the field.
func TestBadKeyFileFailsConfigLoad(t *testing.T) {
	good := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_good", Role: "reader"})
	bad := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_bad", Role: "reader", AllowedIPs: []string{"300.1.2.3"}})
	path := gatewaytest.WriteKeyFile(t, good.Record, bad.Record)
	err := gatewaytest.Load(gatewaytest.Site{Port: gatewaytest.Port(t), KeyFile: path, Handler: `respond "ok"`}.Caddyfile())
	if err == nil {
		t.Fatal("config with a bad key file loaded")
	}
	for _, want := range []string{path, `keys[1] (id "k_bad")`, `allowed_ips[0]`, `"300.1.2.3"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), strings.TrimPrefix(bad.Record.Hash, "sha256:")) {
		t.Error("the error holds a hash")
	}

	// An upstream credential whose placeholder is unset fails the load too.
	os.Unsetenv("APIKEY_TEST_UNSET_TOKEN")
	err = gatewaytest.Load(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		service ollama
		upstream_auth {env.APIKEY_TEST_UNSET_TOKEN}
	}
	respond "ok"
}`, gatewaytest.Port(t), gatewaytest.WriteKeyFile(t, good.Record)))
	if err == nil || !strings.Contains(err.Error(), "APIKEY_TEST_UNSET_TOKEN") {
		t.Errorf("unset credential: %v", err)
	}
}

// TestValidate: settings that provision but make no sense fail the load.
func TestValidate(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_v", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	for name, c := range map[string]struct{ extra, want string }{
		"key_from twice":    {`"key_from": [{"header": "X-Api-Key"}, {"header": "x-api-key"}]`, "key_from[1]: header X-Api-Key is listed twice"},
		"allow_types twice": {`"allow_types": ["dev", "dev"]`, "allow_types: dev is listed twice"},
		"service spaces":    {`"service": "my service"`, `service: "my service" must be one word`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {
				"listen": ["127.0.0.1:%d"],
				"routes": [{"handle": [{"handler": "apikey", "keys": {"source": "file", "path": %q}, %s}]}]}}}}}`,
				gatewaytest.Port(t), keyFile, c.extra)
			err := gatewaytest.LoadJSON([]byte(cfg))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load: %v, want %q", err, c.want)
			}
		})
	}
}

// TestUpstreamSecretFromFile: upstream_auth … file <path> is read at load
// and watched; a rotated secret reaches the upstream within a second, with
// no reload, and a version that is empty keeps the last good one.
func TestUpstreamSecretFromFile(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_secret_file", Role: "reader", Services: []string{"*"}})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "n8n.secret")
	bearerSecret := filepath.Join(dir, "ollama.secret")
	os.WriteFile(secret, []byte("n8n-secret-one\n"), 0o600)
	os.WriteFile(bearerSecret, []byte("ollama-secret-one\n"), 0o600)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	logPath := filepath.Join(dir, "caddy.log")
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[5]s
	}
}
http://127.0.0.1:%[1]d {
	handle_path /n8n/* {
		apikey {
			keys file %[2]s
			service n8n
			upstream_auth file %[3]s
		}
		reverse_proxy %[6]s
	}
	handle_path /ollama/* {
		apikey {
			keys file %[2]s
			upstream_auth bearer file %[4]s
		}
		reverse_proxy %[6]s
	}
}`, port, keyFile, secret, bearerSecret, logPath, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	seen := func(path, header string) string {
		t.Helper()
		if r := gatewaytest.Send(t, "GET", base+path, key.Bearer()...); r.Status != 200 {
			t.Fatalf("%s: %d", path, r.Status)
		}
		return up.Last(t).Header.Get(header)
	}
	if got := seen("/n8n/x", "X-N8n-Api-Key"); got != "n8n-secret-one" {
		t.Fatalf("n8n got %q", got)
	}
	if got := seen("/ollama/x", "Authorization"); got != "Bearer ollama-secret-one" {
		t.Fatalf("ollama got %q", got)
	}

	// Rotate both, the way Kubernetes does: a new file renamed over.
	for path, value := range map[string]string{secret: "n8n-secret-two", bearerSecret: "ollama-secret-two"} {
		tmp := path + ".new"
		os.WriteFile(tmp, []byte(value+"\n"), 0o600)
		os.Rename(tmp, path)
	}
	rotated := time.Now()
	for seen("/n8n/x", "X-N8n-Api-Key") != "n8n-secret-two" || seen("/ollama/x", "Authorization") != "Bearer ollama-secret-two" {
		if time.Since(rotated) > 3*time.Second {
			t.Fatal("the rotated secret was not used within 3s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("rotated secret in use after %v", time.Since(rotated).Round(10*time.Millisecond))

	// An empty version is refused; the last good secret stays.
	os.WriteFile(secret, nil, 0o600)
	gatewaytest.WaitForLog(t, logPath, "upstream secret file cannot be used")
	if got := seen("/n8n/x", "X-N8n-Api-Key"); got != "n8n-secret-two" {
		t.Errorf("after an empty version: %q", got)
	}
	log, _ := os.ReadFile(logPath)
	for _, s := range []string{"n8n-secret-one", "n8n-secret-two", "ollama-secret-one", "ollama-secret-two"} {
		if strings.Contains(string(log), s) {
			t.Errorf("the log holds an upstream secret")
		}
	}
}
