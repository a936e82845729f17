package apikey

import (
	"fmt"
	"path/filepath"
	"strings"
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
}

func opsSite(port, adminPort int, keyFile, auditLog, usageFile, counters, extra string) string {
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
			%[7]s
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
}`, port, adminPort, keyFile, auditLog, usageFile, counters, extra)
}

func startOpsGateway(t *testing.T) *opsGateway {
	t.Helper()
	dir := t.TempDir()
	now := time.Now().UTC()
	g := &opsGateway{keyFile: filepath.Join(dir, "keys.json"), auditLog: filepath.Join(dir, "audit.log"),
		usage: filepath.Join(dir, "usage.json"), keys: map[string]gatewaytest.Key{}}
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
	writeKeyFileAtomic(t, g.keyFile, records...)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	g.config = opsSite(port, adminPort, g.keyFile, g.auditLog, g.usage, filepath.Join(dir, "counters.json"), "")
	gatewaytest.Start(t, g.config)
	return g
}

// startOpsGatewayWithLog is startOpsGateway with Caddy's log, at INFO,
// written to a file with the given filter fields. before, when not nil,
// runs before Caddy starts.
func startOpsGatewayWithLog(t *testing.T, before func(*opsGateway), filters ...string) *opsLogGateway {
	t.Helper()
	g := &opsLogGateway{caddyLog: filepath.Join(t.TempDir(), "caddy.log")}
	if len(filters) == 0 {
		filters = []string{"request>headers>X-Api-Key delete"}
	}
	g.opsGateway = startOpsGatewayConfig(t, before, func(cfg string) string {
		return strings.Replace(cfg, "persist_config off", fmt.Sprintf(`persist_config off
	log {
		output file %s
		level INFO
		format filter {
			%s
		}
	}`, g.caddyLog, strings.Join(filters, "\n\t\t\t")), 1)
	})
	return g
}

type opsLogGateway struct {
	*opsGateway
	caddyLog string
}

// startOpsGatewayConfig starts the opsGateway's config as edit changes it,
// after running before (when not nil).
func startOpsGatewayConfig(t *testing.T, before func(*opsGateway), edit func(string) string) *opsGateway {
	t.Helper()
	dir := t.TempDir()
	now := time.Now().UTC()
	g := &opsGateway{keyFile: filepath.Join(dir, "keys.json"), auditLog: filepath.Join(dir, "audit.log"),
		usage: filepath.Join(dir, "usage.json"), keys: map[string]gatewaytest.Key{}}
	g.keys["reader"] = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ops_reader", Type: "dev", Role: "reader", Services: []string{"ollama"}, QuotaPerDay: int64p(100)})
	g.keys["writer"] = gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_ops_writer", Type: "prod", Role: "writer", Services: []string{"*"}})
	g.keys["revoked"] = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_ops_revoked", Role: "reader", Revoked: true,
		ExpiresAt: now.Add(24 * time.Hour).Format(time.RFC3339)})
	writeKeyFileAtomic(t, g.keyFile, g.keys["reader"].Record, g.keys["writer"].Record, g.keys["revoked"].Record)
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	g.config = edit(opsSite(port, adminPort, g.keyFile, g.auditLog, g.usage, filepath.Join(dir, "counters.json"), ""))
	if before != nil {
		before(g)
	}
	gatewaytest.Start(t, g.config)
	return g
}
