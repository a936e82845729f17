package admin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// opsGateway is a running Caddy with its admin endpoint, two routes on one
// key file, an audit log, and usage and counters in their own files.
type opsGateway struct {
	base, admin                      string
	keyFile, auditLog, usage, config string
	keys                             map[string]gatewaytest.Key
	// caddyLog is Caddy's own log, when startOpsGatewayWithLog started it.
	caddyLog string
}

func opsSite(port, adminPort int, keyFile, auditLog, usageFile, counters string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	persist_config off
}
http://127.0.0.1:%[1]d {
	handle_path /ollama/* {
		apikey {
			keys file %[3]s
			service ollama
			audit_log %[4]s
			usage_file %[5]s
			failed_auth_limit off
			metrics per_key
			counters memory {
				file %[6]s
			}
		}
		respond "ok"
	}
	handle_path /n8n/* {
		apikey {
			keys file %[3]s
			service n8n
			audit_log %[4]s
			usage_file %[5]s
			failed_auth_limit off
			counters memory {
				file %[6]s
			}
		}
		respond "ok"
	}
}`, port, adminPort, keyFile, auditLog, usageFile, counters)
}

// startOpsGateway starts an opsGateway whose keys are "reader" (100 a day,
// ollama only), "writer" (prod, every service), "revoked", "expired" and
// "rotated" (whose previous key, "old", is still in its grace period).
func startOpsGateway(t *testing.T) *opsGateway {
	t.Helper()
	return startOpsGatewayConfig(t, func(cfg string) string { return cfg })
}

// startOpsGatewayWithLog is startOpsGateway with Caddy's log, at INFO,
// written to a file with the given filter fields.
func startOpsGatewayWithLog(t *testing.T, filters ...string) *opsGateway {
	t.Helper()
	caddyLog := filepath.Join(t.TempDir(), "caddy.log")
	if len(filters) == 0 {
		filters = []string{"request>headers>X-Api-Key delete"}
	}
	g := startOpsGatewayConfig(t, func(cfg string) string {
		return strings.Replace(cfg, "persist_config off", fmt.Sprintf(`persist_config off
	log {
		output file %s
		level INFO
		format filter {
			%s
		}
	}`, caddyLog, strings.Join(filters, "\n\t\t\t")), 1)
	})
	g.caddyLog = caddyLog
	return g
}

// startOpsGatewayConfig starts the opsGateway's config as edit changes it.
func startOpsGatewayConfig(t *testing.T, edit func(string) string) *opsGateway {
	t.Helper()
	dir := t.TempDir()
	now := time.Now().UTC()
	g := &opsGateway{auditLog: filepath.Join(dir, "audit.log"), usage: filepath.Join(dir, "usage.json"), keys: map[string]gatewaytest.Key{}}
	add := func(name string, typ keystore.Type, rec keystore.Record) {
		g.keys[name] = gatewaytest.NewKey(t, typ, rec)
	}
	add("reader", keystore.Dev, keystore.Record{ID: "k_ops_reader", Name: "Ops reader", Type: "dev", Role: "reader", Services: []string{"ollama"}, QuotaPerDay: int64p(100)})
	add("writer", keystore.Prod, keystore.Record{ID: "k_ops_writer", Type: "prod", Role: "writer", Services: []string{"*"}})
	add("revoked", keystore.Dev, keystore.Record{ID: "k_ops_revoked", Role: "reader", Revoked: true})
	add("expired", keystore.Dev, keystore.Record{ID: "k_ops_expired", Role: "reader", ExpiresAt: now.Add(-time.Hour).Format(time.RFC3339)})
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	add("rotated", keystore.Dev, keystore.Record{ID: "k_ops_rotated", Role: "reader", Services: []string{"*"},
		PreviousHashes: []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: now.Add(time.Hour).Format(time.RFC3339)}}})
	g.keys["old"] = old
	var records []keystore.Record
	for _, name := range []string{"reader", "writer", "revoked", "expired", "rotated"} {
		records = append(records, g.keys[name].Record)
	}
	g.keyFile = gatewaytest.WriteKeyFile(t, records...)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	g.config = edit(opsSite(port, adminPort, g.keyFile, g.auditLog, g.usage, filepath.Join(dir, "counters.json")))
	gatewaytest.Start(t, g.config)
	return g
}

// keyService is a real HTTP server speaking the key service protocol: it
// answers a POSTed {"hash"} with the record that has that hash, or 404,
// and counts its calls.
type keyService struct {
	*httptest.Server
	calls atomic.Int64
}

func newKeyService(t *testing.T, records ...keystore.Record) *keyService {
	byHash := map[string]keystore.Record{}
	for _, r := range records {
		byHash[r.Hash] = r
	}
	s := &keyService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		var req struct {
			Hash string `json:"hash"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		rec, known := byHash[req.Hash]
		switch {
		case r.Method != "POST":
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
		case !known:
			http.Error(w, "unknown", http.StatusNotFound)
		default:
			json.NewEncoder(w).Encode(rec)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// remoteGateway is a running Caddy with its admin endpoint and one route
// whose keys come from a keyService, in front of an upstream.
type remoteGateway struct {
	url, admin string
	svc        *keyService
}

// startRemoteGateway starts a remoteGateway with the given cache settings
// and the key service's records.
func startRemoteGateway(t *testing.T, cache string, records ...keystore.Record) *remoteGateway {
	t.Setenv("APIKEY_TEST_KEYSVC_TOKEN", "keysvc-token-0003")
	g := &remoteGateway{svc: newKeyService(t, records...)}
	up := gatewaytest.NewUpstream(t)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d/x", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin 127.0.0.1:%[6]d
	persist_config off
}
http://127.0.0.1:%[1]d {
	apikey {
		keys http %[2]s/lookup {
			header Authorization "Bearer {env.APIKEY_TEST_KEYSVC_TOKEN}"
			timeout 300ms
		}
		cache {
			%[3]s
		}
		failed_auth_limit off
		counters memory {
			file %[4]s
		}
	}
	reverse_proxy %[5]s
}`, port, g.svc.URL, cache, filepath.Join(t.TempDir(), "counters.json"), up.Addr(), adminPort))
	return g
}

// leaks reports whether text holds a key, a tell-tale part of it, or its
// hash, in any case.
func leaks(text string, k gatewaytest.Key) bool {
	lower := strings.ToLower(text)
	hash := strings.TrimPrefix(k.Record.Hash, "sha256:")
	return strings.Contains(lower, strings.ToLower(k.Secret[len(k.Secret)-16:])) || strings.Contains(lower, hash[:16])
}

func int64p(n int64) *int64 { return &n }
