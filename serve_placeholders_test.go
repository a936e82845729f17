package apikey

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestPlaceholdersReachUpstreamAndAccessLog runs a real Caddy whose routes
// read the admitted key's placeholders in reverse_proxy, in upstream_auth
// and in the access log's user_id, alone and next to other handlers that
// set {http.auth.user.id}: before apikey (vars; apikey's key wins, as with
// basic_auth before it), after it (vars; the later one wins), and a second
// apikey on the same request (the second key wins).
func TestPlaceholdersReachUpstreamAndAccessLog(t *testing.T) {
	first := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_first", Name: "First key", Role: "reader", Services: []string{"*"}})
	second := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_second", Name: "Second key", Role: "writer", Services: []string{"*"}})
	keyFile := gatewaytest.WriteKeyFile(t, first.Record, second.Record)
	up := gatewaytest.NewUpstream(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	port := gatewaytest.Port(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	seen := `reverse_proxy %[3]s {
			header_up X-Seen-User {http.auth.user.id}
			header_up X-Seen-Id {http.apikey.id}
			header_up X-Seen-Name {http.apikey.name}
			header_up X-Seen-Role {http.apikey.role}
			header_up X-Seen-Type {http.apikey.type}
			header_up X-Seen-Service {http.apikey.service}
		}`
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%[1]d {
	log {
		output file %[2]s
		format filter {
			request>headers>Authorization delete
			request>headers>X-Second-Key delete
		}
	}
	route /alone/* {
		apikey {
			keys file %[4]s
			service ollama
			upstream_auth header X-Upstream-Token "tok-{http.apikey.id}-{http.apikey.type}"
		}
		`+seen+`
	}
	route /user-set-before/* {
		vars http.auth.user.id someone-else
		apikey {
			keys file %[4]s
		}
		`+seen+`
	}
	route /user-set-after/* {
		apikey {
			keys file %[4]s
		}
		vars http.auth.user.id set-after
		`+seen+`
	}
	route /twice/* {
		apikey {
			keys file %[4]s
			service first
		}
		apikey {
			keys file %[4]s
			key_from header X-Second-Key
			service second
		}
		`+seen+`
	}
}
`, port, accessLog, up.Addr(), keyFile))

	cases := []struct {
		path    string
		headers []string
		want    map[string]string
		user    string // the access log's user_id
	}{
		{"/alone/x", first.Bearer(), map[string]string{"X-Seen-User": "k_first", "X-Seen-Id": "k_first", "X-Seen-Name": "First key",
			"X-Seen-Role": "reader", "X-Seen-Type": "dev", "X-Seen-Service": "ollama", "X-Upstream-Token": "tok-k_first-dev"}, "k_first"},
		{"/user-set-before/x", second.Bearer(), map[string]string{"X-Seen-User": "k_second", "X-Seen-Id": "k_second", "X-Seen-Name": "Second key",
			"X-Seen-Role": "writer", "X-Seen-Type": "prod", "X-Seen-Service": ""}, "k_second"},
		{"/user-set-after/x", first.Bearer(), map[string]string{"X-Seen-User": "set-after", "X-Seen-Id": "k_first"}, "set-after"},
		{"/twice/x", append(first.Bearer(), "X-Second-Key", second.Secret), map[string]string{"X-Seen-User": "k_second", "X-Seen-Id": "k_second",
			"X-Seen-Name": "Second key", "X-Seen-Role": "writer", "X-Seen-Type": "prod", "X-Seen-Service": "second"}, "k_second"},
	}
	for _, c := range cases {
		if r := gatewaytest.Send(t, "GET", url+c.path, c.headers...); r.Status != 200 {
			t.Fatalf("%s: status %d", c.path, r.Status)
		}
		got := up.Last(t)
		for h, want := range c.want {
			if v := got.Header.Get(h); v != want {
				t.Errorf("%s: %s = %q, want %q", c.path, h, v, want)
			}
		}
	}

	users := accessLogUsers(t, accessLog, len(cases))
	for _, c := range cases {
		if users[c.path] != c.user {
			t.Errorf("%s: access log user_id %q, want %q", c.path, users[c.path], c.user)
		}
	}
}

// accessLogUsers waits for n lines in the access log and returns each
// request's user_id by path.
func accessLogUsers(t *testing.T, path string, n int) map[string]string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(data) > 0 && len(lines) >= n {
			users := map[string]string{}
			for _, line := range lines {
				var entry struct {
					UserID  string `json:"user_id"`
					Request struct {
						URI string `json:"uri"`
					} `json:"request"`
				}
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("access log line: %v", err)
				}
				users[entry.Request.URI] = entry.UserID
			}
			return users
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access log has %d lines, want %d", len(lines), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
