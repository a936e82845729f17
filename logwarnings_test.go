package apikey

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// loadWarning is a warning the handler logged as the config loaded.
type loadWarning struct {
	Msg    string   `json:"msg"`
	Header string   `json:"header"`
	Logs   []string `json:"logs"`
}

// apikeyWarnings reads the warnings the handler wrote into Caddy's log.
func apikeyWarnings(t *testing.T, logPath string) []loadWarning {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []loadWarning
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Level  string `json:"level"`
			Logger string `json:"logger"`
			loadWarning
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Level == "warn" && line.Logger == "http.handlers.apikey" {
			out = append(out, line.loadWarning)
		}
	}
	return out
}

// warningsAbout keeps the warnings whose message contains subject.
func warningsAbout(ws []loadWarning, subject string) []loadWarning {
	var out []loadWarning
	for _, w := range ws {
		if strings.Contains(w.Msg, subject) {
			out = append(out, w)
		}
	}
	return out
}

// edgeSite is the README's "A TLS edge site" Caddyfile, made to run here:
// plain HTTP on a free port, files in temporary folders, Caddy's own log
// into logPath, the upstreams on ports where nothing listens.
type edgeSite struct {
	config    string
	port      int
	key       gatewaytest.Key
	accessLog string
}

func edgeConfig(t *testing.T, logPath string) edgeSite {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)### A TLS edge site\n.*?```caddyfile\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal(`README.md has no Caddyfile under "### A TLS edge site"`)
	}
	site := edgeSite{port: gatewaytest.Port(t), key: gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_edge", Role: "reader", Services: []string{"*"}})}
	keyFile := gatewaytest.WriteKeyFile(t, site.key.Record)
	secrets, logs := t.TempDir(), t.TempDir()
	site.accessLog = filepath.Join(logs, "access.log")
	for _, name := range []string{"ollama", "n8n"} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte("upstream-secret-"+name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := strings.NewReplacer(
		"/etc/caddy/keys/keys.json", keyFile,
		"/etc/caddy/secrets/", secrets+"/",
		"/var/log/caddy/", logs+"/",
		"api.example.com {", fmt.Sprintf("http://api.example.com:%d {", site.port),
		"localhost:11434", fmt.Sprintf("127.0.0.1:%d", gatewaytest.ClosedPort(t)),
		"localhost:5678", fmt.Sprintf("127.0.0.1:%d", gatewaytest.ClosedPort(t)),
	).Replace(string(m[1]))
	cfg = strings.Replace(cfg, "{\n", "{\n\tadmin off\n\tpersist_config off\n", 1)
	site.config = strings.Replace(cfg, "\tlog {\n", "\tlog {\n\t\toutput file "+logPath+"\n", 1)
	return site
}

// TestEdgeConfigLogWarnings loads the README's TLS edge site: its filters
// keep X-Api-Key out of the access log and the global log, so nothing is
// warned about; without the site log's filter, the access log is warned
// about once, naming the log; without the global filter, the error log
// (the default log) is. Each case sends a key in X-Api-Key to a route
// whose upstream does not answer, and the key is written into a log
// exactly when a warning said it would be.
func TestEdgeConfigLogWarnings(t *testing.T) {
	for _, c := range []struct {
		name, drop string
		subject    string // "" for no warning
		logs       []string
	}{
		{"as in the README", "", "", nil},
		{"without the access log's filter", "\t\tformat filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t}\n", "access log writes request headers", []string{"log0"}},
		{"without the global filter", "\t\tformat filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t\trequest>headers>X-N8n-Api-Key delete\n\t\t}\n", "error log writes request headers", []string{"default"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			site := edgeConfig(t, logPath)
			if c.drop != "" {
				if !strings.Contains(site.config, c.drop) {
					t.Fatalf("the README's edge config no longer has %q", c.drop)
				}
				site.config = strings.Replace(site.config, c.drop, "", 1)
			}
			gatewaytest.Start(t, site.config)
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/ollama/api/tags", site.port), nil)
			req.Host = "api.example.com"
			req.Header.Set("X-Api-Key", site.key.Secret)
			resp, err := gatewaytest.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("%s through a route whose upstream does not answer: %d, want 502", site.key.Record.ID, resp.StatusCode)
			}
			gatewaytest.Stop()
			caddyLog, _ := os.ReadFile(logPath)
			accessLog, _ := os.ReadFile(site.accessLog)
			if len(accessLog) == 0 {
				t.Fatal("the access log is empty")
			}
			inCaddyLog, inAccessLog := strings.Contains(string(caddyLog), site.key.Secret), strings.Contains(string(accessLog), site.key.Secret)
			if inCaddyLog != (c.logs != nil && c.logs[0] == "default") || inAccessLog != (c.logs != nil && c.logs[0] == "log0") {
				t.Fatalf("%s written into Caddy's log: %v, into the access log: %v; the warning names %v", site.key.Record.ID, inCaddyLog, inAccessLog, c.logs)
			}
			ws := apikeyWarnings(t, logPath)
			if c.subject == "" {
				if len(ws) != 0 {
					t.Fatalf("warnings: %+v", ws)
				}
				return
			}
			got := warningsAbout(ws, c.subject)
			if len(got) != 1 || got[0].Header != "X-Api-Key" || strings.Join(got[0].Logs, ",") != strings.Join(c.logs, ",") ||
				!strings.Contains(got[0].Msg, "request>headers>X-Api-Key delete") {
				t.Fatalf("want one warning about %q naming X-Api-Key in %v; got %+v", c.subject, c.logs, ws)
			}
			if len(ws) != 1 {
				t.Errorf("other warnings: %+v", ws)
			}
		})
	}
}

// TestDebugLogWarnings: at debug, reverse_proxy's "upstream roundtrip" line
// writes the n8n credential the handler sets in X-N8N-API-KEY. The handler
// warns exactly when a request really gets it written: without a filter,
// with a filter that names the header in another case than Caddy writes
// it, and not with a filter that deletes or hashes it.
func TestDebugLogWarnings(t *testing.T) {
	const secret = "n8n-upstream-credential-9f3k"
	key := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_debug_n8n", Role: "reader", Services: []string{"n8n"}})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	secretFile := filepath.Join(t.TempDir(), "n8n")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := gatewaytest.NewUpstream(t)
	for _, c := range []struct {
		name, filter string
		warns        bool
		hint         string
	}{
		{"no filter", "", true, ""},
		{"a filter deleting it", "request>headers>X-N8n-Api-Key delete", false, ""},
		{"a filter hashing it", "request>headers>X-N8n-Api-Key hash", false, ""},
		{"a filter deleting the request's headers", "request>headers delete", false, ""},
		{"a filter in another case", "request>headers>X-N8N-API-KEY delete", true, "canonical form"},
	} {
		t.Run(c.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			filter := ""
			if c.filter != "" {
				filter = "format filter {\n\t\t\t" + c.filter + "\n\t\t}"
			}
			port := gatewaytest.Port(t)
			gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
		level DEBUG
		%[2]s
	}
}
http://127.0.0.1:%[3]d {
	handle_path /n8n/* {
		apikey {
			keys file %[4]s
			key_from header Authorization Bearer
			service n8n
			upstream_auth file %[5]s
		}
		reverse_proxy %[6]s
	}
}`, logPath, filter, port, keyFile, secretFile, up.Addr()))
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/n8n/api/v1/workflows", port), nil)
			req.Header.Set("Authorization", "Bearer "+key.Secret)
			resp, err := gatewaytest.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || up.Last(t).Header.Get("X-N8N-API-KEY") != secret {
				t.Fatalf("%s: status %d, or the upstream did not get its credential", key.Record.ID, resp.StatusCode)
			}
			gatewaytest.Stop()
			data, _ := os.ReadFile(logPath)
			if written := strings.Contains(string(data), secret); written != c.warns {
				t.Fatalf("the upstream credential written into the debug log: %v; this case expects %v", written, c.warns)
			}
			ws := warningsAbout(apikeyWarnings(t, logPath), "upstream roundtrip")
			if !c.warns {
				if len(ws) != 0 {
					t.Fatalf("warnings: %+v", ws)
				}
				return
			}
			if len(ws) != 1 || ws[0].Header != "X-N8n-Api-Key" || !strings.Contains(ws[0].Msg, "request>headers>X-N8n-Api-Key delete") ||
				!strings.Contains(ws[0].Msg, "log at info") || !strings.Contains(ws[0].Msg, c.hint) {
				t.Fatalf("want one warning naming X-N8n-Api-Key and how to fix it; got %+v", ws)
			}
		})
	}
}

// TestNamedAccessLogWarnings: a site's access log that goes through a
// logger named in the global options is read with that log's filter.
func TestNamedAccessLogWarnings(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_named_log", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	for _, c := range []struct {
		name, filter string
		warns        bool
		hint         string
	}{
		{"with a filter", "format filter {\n\t\t\trequest>headers>X-Api-Key delete\n\t\t}", false, ""},
		{"without a filter", "", true, ""},
		// Caddy's hash filter writes the first 8 hex digits of the value's
		// SHA-256: of a key, the start of the digest the key file keeps.
		{"with a hash filter", "format filter {\n\t\t\trequest>headers>X-Api-Key hash\n\t\t}", true, "hash filter is not enough"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			logPath := filepath.Join(dir, "caddy.log")
			port := gatewaytest.Port(t)
			gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
		format filter {
			request>headers>X-Api-Key delete
		}
	}
	log access {
		output file %[2]s
		include http.log.access.access
		%[3]s
	}
}
http://127.0.0.1:%[4]d {
	log access
	apikey {
		keys file %[5]s
	}
	respond ok
}`, logPath, filepath.Join(dir, "access.log"), c.filter, port, keyFile))
			if r := gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/", port), "X-Api-Key", key.Secret); r.Status != 200 {
				t.Fatalf("%s: %d", key.Record.ID, r.Status)
			}
			gatewaytest.Stop()
			access, _ := os.ReadFile(filepath.Join(dir, "access.log"))
			digest := strings.TrimPrefix(key.Record.Hash, "sha256:")
			if c.hint != "" && !strings.Contains(string(access), digest[:8]) {
				t.Fatalf("the hash filter did not write the start of %s's digest: the warning would be wrong", key.Record.ID)
			}
			ws := apikeyWarnings(t, logPath)
			got := warningsAbout(ws, "access log writes request headers")
			if !c.warns {
				if len(ws) != 0 {
					t.Fatalf("warnings: %+v", ws)
				}
				return
			}
			if len(got) != 1 || strings.Join(got[0].Logs, ",") != "access" {
				t.Fatalf("want one warning naming the log \"access\"; got %+v", ws)
			}
			if c.hint != "" && !strings.Contains(got[0].Msg, c.hint) {
				t.Fatalf("the warning does not say %q: %+v", c.hint, got[0])
			}
		})
	}
}

// TestDebugConfigLineWarning: at debug, Caddy logs the whole HTTP app's
// config on every load (automatic HTTPS's "adjusted config" line), the
// handler's JSON with it. The handler warns exactly when that writes a
// secret: upstream_auth's credential written in the config as it is, not
// one taken from a file.
func TestDebugConfigLineWarning(t *testing.T) {
	const secret = "upstream-bearer-7d2kq9"
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_debug_config", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	secretFile := filepath.Join(t.TempDir(), "ollama")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, auth, level string
		warns             bool
	}{
		{"inline, at debug", "upstream_auth bearer " + secret, "DEBUG", true},
		{"from a file, at debug", "upstream_auth bearer file " + secretFile, "DEBUG", false},
		{"inline, at info", "upstream_auth bearer " + secret, "INFO", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %s
		level %s
		format filter {
			request>headers>X-Api-Key delete
		}
	}
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		%s
	}
	respond ok
}`, logPath, c.level, gatewaytest.Port(t), keyFile, c.auth))
			gatewaytest.Stop()
			data, _ := os.ReadFile(logPath)
			written := strings.Contains(string(data), secret)
			got := warningsAbout(apikeyWarnings(t, logPath), "writes the whole config")
			if written != c.warns {
				t.Fatalf("the log holds the credential: %v, want %v (the test's premise)", written, c.warns)
			}
			if c.warns && (len(got) != 1 || !strings.Contains(got[0].Msg, "upstream_auth's credential")) {
				t.Fatalf("want one warning naming upstream_auth's credential; got %+v", got)
			}
			if !c.warns && len(got) != 0 {
				t.Fatalf("a warning although the credential is not written: %+v", got)
			}
		})
	}
}

// TestDebugUpstreamWarningWithLogCredentials: with log_credentials, Caddy
// writes Authorization in full, so reverse_proxy's debug "upstream
// roundtrip" line writes the upstream's bearer token. The handler warns
// about it, besides the warning about the client's key in the same header.
func TestDebugUpstreamWarningWithLogCredentials(t *testing.T) {
	const secret = "upstream-bearer-q8w2m5"
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_log_credentials", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	secretFile := filepath.Join(t.TempDir(), "ollama")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := gatewaytest.NewUpstream(t)
	logPath := filepath.Join(t.TempDir(), "caddy.log")
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	servers {
		log_credentials
	}
	log {
		output file %s
		level DEBUG
	}
}
http://127.0.0.1:%d {
	handle_path /ollama/* {
		apikey {
			keys file %s
			key_from header Authorization Bearer
			upstream_auth bearer file %s
		}
		reverse_proxy %s
	}
}`, logPath, port, keyFile, secretFile, up.Addr()))
	if r := gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/ollama/api/tags", port), key.Bearer()...); r.Status != 200 {
		t.Fatalf("%s: %d", key.Record.ID, r.Status)
	}
	gatewaytest.Stop()
	data, _ := os.ReadFile(logPath)
	if !strings.Contains(string(data), secret) {
		t.Fatal("the debug log does not hold the upstream's credential: the test's premise is gone")
	}
	ws := apikeyWarnings(t, logPath)
	if got := warningsAbout(ws, "headers sent upstream"); len(got) != 1 || got[0].Header != "Authorization" {
		t.Fatalf("want one warning about the headers sent upstream, naming Authorization; got %+v", ws)
	}
	if got := warningsAbout(ws, "clients send keys in Authorization"); len(got) == 0 {
		t.Fatalf("the warning about the client's key is gone: %+v", ws)
	}
}
