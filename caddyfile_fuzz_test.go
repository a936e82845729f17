package apikey

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// apikeyBlocks returns the bodies of the apikey blocks in a Caddyfile.
func apikeyBlocks(caddyfileText string) []string {
	var bodies []string
	lines := strings.Split(caddyfileText, "\n")
	for i := 0; i < len(lines); i++ {
		fields := strings.Fields(lines[i])
		if len(fields) < 2 || fields[0] != "apikey" || fields[len(fields)-1] != "{" {
			continue
		}
		depth, block := 1, []string{}
		for i++; i < len(lines) && depth > 0; i++ {
			depth += strings.Count(lines[i], "{") - strings.Count(lines[i], "}")
			if depth > 0 {
				block = append(block, lines[i])
			}
		}
		i--
		bodies = append(bodies, strings.Join(block, "\n"))
	}
	return bodies
}

// FuzzCaddyfile parses arbitrary apikey block bodies as Caddy does. A
// refused block's error names the file and line. An accepted block marshals
// to JSON that reads back to the same JSON with no unknown field, and it
// provisions (its files moved to a temporary folder, its Redis to a closed
// loopback port) or is refused with one of loadRefusals; then
// Validate refuses it exactly when README.md says the load does: a key_from
// header listed twice, a type listed twice, a service with spaces or quotes.
func FuzzCaddyfile(f *testing.F) {
	var files []string
	for _, pattern := range []string{"testdata/adapt/*.txt", "examples/Caddyfile", "examples/redis/Caddyfile"} {
		m, _ := filepath.Glob(pattern)
		files = append(files, m...)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		text, _, _ := strings.Cut(string(data), "----------")
		for _, body := range apikeyBlocks(text) {
			f.Add(body)
		}
	}
	for _, s := range []string{
		"", "keys file k.json", "keys file k.json\nkeys file k.json", "keys http http://127.0.0.1:9/lookup {\n header A b\n timeout 1s\n}\ncache {\n max_keys 5\n ttl 1m\n stale 1h\n}",
		"keys file k.json\ncache {\n ttl 1s\n}", "keys file k.json\nkey_from header X-Key\nkey_from header x-key",
		"keys file k.json\nallow_types dev dev", "keys file k.json\nservice \"a b\"", "keys file k.json\nservice a\\\"b",
		"keys file k.json\nservice ollama\nupstream_auth {env.APIKEY_FUZZ_UNSET}", "keys file k.json\nupstream_auth header X-A \"\"",
		"keys file k.json\nupstream_auth bearer file /run/secret", "keys file k.json\ncounters redis {\n address 10.0.0.1:6379\n}",
		"keys file k.json\nquota dev 0/day\nrate prod 1/h\nfailed_auth_limit off\nquota_timezone Europe/Berlin",
		"keys file \"\"", "keys file k.json\nusage_depth 0", "keys file k.json\nmetrics per_key\naudit_log a.log\nusage_file u.json",
		"keys file k.json\n}\nkeys file other.json\n{", "keys http 0", "keys http http:///x",
	} {
		f.Add(s)
	}

	dir := f.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keyFile, []byte(`{"keys": []}`), 0o600); err != nil {
		f.Fatal(err)
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("fuzz-secret\n"), 0o600); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, body string) {
		tokens, err := caddyfile.Tokenize([]byte("apikey {\n"+body+"\n}\n"), "Caddyfile")
		if err != nil {
			return // not a Caddyfile: Caddy refuses it before any directive sees it
		}
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Fatalf("the error does not name the file and line: %v", err)
			}
			return
		}

		// Accepted: the JSON reads back, strictly, to the same JSON.
		out, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("an accepted block does not marshal: %v", err)
		}
		var back Handler
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&back); err != nil {
			t.Fatalf("the JSON does not read back: %v\n%s", err, out)
		}
		again, _ := json.Marshal(&back)
		if !bytes.Equal(again, out) {
			t.Fatalf("the JSON changed when read back:\n%s\n%s", out, again)
		}

		// Provisioned, with nothing outside the temporary folder or loopback.
		back.KeysRaw = sanitizeModule(t, back.KeysRaw, map[string]map[string]any{"file": {"path": keyFile}})
		back.CountersRaw = sanitizeModule(t, back.CountersRaw, map[string]map[string]any{
			"memory": {"file": filepath.Join(dir, "counters.json")},
			"redis":  {"addresses": []string{"127.0.0.1:1"}},
		})
		if cache := back.KeysRaw; bytes.Contains(cache, []byte(`"max_keys"`)) {
			// Not more than the fuzzer's memory can hold per call.
			var m map[string]any
			json.Unmarshal(cache, &m)
			if c, ok := m["cache"].(map[string]any); ok {
				if n, ok := c["max_keys"].(float64); ok && n > 1000 {
					c["max_keys"] = 1000
				}
			}
			back.KeysRaw, _ = json.Marshal(m)
		}
		if back.UpstreamAuth != nil && back.UpstreamAuth.File != "" {
			back.UpstreamAuth.File = secretFile
		}
		back.UsageFile = filepath.Join(dir, "usage.json")
		if back.AuditLog != "" {
			back.AuditLog = filepath.Join(dir, "audit.log")
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		defer back.Cleanup()
		if err := back.Provision(ctx); err != nil {
			for _, refusal := range loadRefusals {
				if strings.Contains(err.Error(), refusal) {
					return
				}
			}
			t.Fatalf("an accepted block does not provision: %v\n%s", err, out)
		}
		seen, twice := map[string]bool{}, false
		for _, loc := range back.KeyFrom {
			name := http.CanonicalHeaderKey(loc.Header)
			twice = twice || seen[name]
			seen[name] = true
		}
		types := map[string]bool{}
		for _, typ := range back.AllowTypes {
			twice = twice || types[typ]
			types[typ] = true
		}
		want := twice || strings.ContainsAny(back.Service, " \t\"\\")
		if err := back.Validate(); (err != nil) != want {
			t.Fatalf("Validate says %v; README.md says refused: %v\n%s", err, want, out)
		}
	})
}

// loadRefusals are the refusals the config load makes after the Caddyfile
// parser accepted a block. Each is a clear error, without the file and line;
// the parser could make them too.
var loadRefusals = []string{
	// An upstream credential that is empty, comes out empty once its
	// placeholders are filled, or holds a line break (README.md: "fails the
	// load").
	"upstream_auth: ",
	// keys http with something that is not an http or https URL.
	"is not an http or https URL",
	// keys redis or counters redis naming no Redis, in a config without the
	// global apikey option (which a block on its own cannot have).
	"give one here, or once for every route in the global option",
}

// sanitizeModule sets fields of a module's JSON by its name ("source" or
// "store"): paths into the temporary folder, addresses to loopback.
func sanitizeModule(t *testing.T, raw json.RawMessage, set map[string]map[string]any) json.RawMessage {
	t.Helper()
	if raw == nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("module JSON: %v", err)
	}
	name, _ := m["source"].(string)
	if name == "" {
		name, _ = m["store"].(string)
	}
	for k, v := range set[name] {
		m[k] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
