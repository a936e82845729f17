package gatewaytest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Ops is a running Caddy with its admin endpoint, two routes (/ollama/*,
// with per-key metrics, and /n8n/*) on one key file, an audit log, and
// usage and counters in their own files.
type Ops struct {
	// Base and Admin are the URLs of the site and of the admin endpoint.
	Base, Admin string
	// KeyFile, AuditLog and Usage are the files of the routes; Config is
	// the Caddyfile that runs.
	KeyFile, AuditLog, Usage, Config string
	// CaddyLog is Caddy's own log, when OpsOptions.LogFilters asked for it.
	CaddyLog string
	// Keys are "reader" (100 a day, ollama only), "writer" (prod, every
	// service), "revoked", "expired" and "rotated", whose previous key,
	// "old", is still in its grace period.
	Keys map[string]Key
}

// OpsOptions change what StartOps starts; the zero value starts Ops as it
// is.
type OpsOptions struct {
	// Log, when set, writes Caddy's log at INFO to Ops.CaddyLog through a
	// filter with LogFilters (by default the X-Api-Key header deleted).
	Log        bool
	LogFilters []string
	// Edit, when not nil, changes the Caddyfile before it runs.
	Edit func(caddyfile string) string
	// Before, when not nil, runs before Caddy starts.
	Before func(*Ops)
}

// OpsSite is the Caddyfile of Ops.
func OpsSite(port, adminPort int, keyFile, auditLog, usageFile, counters string) string {
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

// StartOps starts Ops until the test ends.
func StartOps(t testing.TB, opts OpsOptions) *Ops {
	t.Helper()
	dir := t.TempDir()
	now := time.Now().UTC()
	g := &Ops{AuditLog: filepath.Join(dir, "audit.log"), Usage: filepath.Join(dir, "usage.json"), Keys: map[string]Key{}}
	add := func(name string, typ keystore.Type, rec keystore.Record) {
		g.Keys[name] = NewKey(t, typ, rec)
	}
	quota := int64(100)
	add("reader", keystore.Dev, keystore.Record{ID: "k_ops_reader", Name: "Ops reader", Type: "dev", Role: "reader", Services: []string{"ollama"}, QuotaPerDay: &quota})
	add("writer", keystore.Prod, keystore.Record{ID: "k_ops_writer", Type: "prod", Role: "writer", Services: []string{"*"}})
	add("revoked", keystore.Dev, keystore.Record{ID: "k_ops_revoked", Role: "reader", Revoked: true})
	add("expired", keystore.Dev, keystore.Record{ID: "k_ops_expired", Role: "reader", ExpiresAt: now.Add(-time.Hour).Format(time.RFC3339)})
	old := NewKey(t, keystore.Dev, keystore.Record{})
	add("rotated", keystore.Dev, keystore.Record{ID: "k_ops_rotated", Role: "reader", Services: []string{"*"},
		PreviousHashes: []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: now.Add(time.Hour).Format(time.RFC3339)}}})
	g.Keys["old"] = old
	var records []keystore.Record
	for _, name := range []string{"reader", "writer", "revoked", "expired", "rotated"} {
		records = append(records, g.Keys[name].Record)
	}
	g.KeyFile = WriteKeyFile(t, records...)
	port, adminPort := Port(t), Port(t)
	g.Base = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.Admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	g.Config = OpsSite(port, adminPort, g.KeyFile, g.AuditLog, g.Usage, filepath.Join(dir, "counters.json"))
	if opts.Log {
		g.CaddyLog = filepath.Join(dir, "caddy.log")
		filters := opts.LogFilters
		if len(filters) == 0 {
			filters = []string{"request>headers>X-Api-Key delete"}
		}
		g.Config = strings.Replace(g.Config, "persist_config off", fmt.Sprintf(`persist_config off
	log {
		output file %s
		level INFO
		format filter {
			%s
		}
	}`, g.CaddyLog, strings.Join(filters, "\n\t\t\t")), 1)
	}
	if opts.Edit != nil {
		g.Config = opts.Edit(g.Config)
	}
	if opts.Before != nil {
		opts.Before(g)
	}
	Start(t, g.Config)
	return g
}
