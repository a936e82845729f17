package gatewaytest

import (
	"fmt"
	"path/filepath"
	"testing"
)

// StartKeyFile runs Caddy, without an admin endpoint, in front of a key
// file (service ollama, no failed-auth limit, counters in memory) until
// the test ends. The route answers "admitted <key id>"; the URL returned is
// its /api/tags.
func StartKeyFile(t testing.TB, keyFile string) string {
	t.Helper()
	port := Port(t)
	Start(t, Site{Port: port, KeyFile: keyFile, Apikey: "service ollama\nfailed_auth_limit off",
		CountersFile: filepath.Join(t.TempDir(), "counters.json"), Handler: `respond "admitted {http.apikey.id}"`}.Caddyfile())
	return fmt.Sprintf("http://127.0.0.1:%d/api/tags", port)
}

// TokensRedisSite is a gateway without an admin endpoint whose /openai/*
// route counts tokens (tokens openai) in Redis at redisAddr, with
// redisOptions (e.g. "timeout 2s") in its counters block, in front of an
// upstream (host:port) that may stream.
func TokensRedisSite(port int, keyFile, redisAddr, redisOptions, upstream string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	handle_path /openai/* {
		apikey {
			keys file %s
			service openai
			tokens openai
			failed_auth_limit off
			counters redis {
				address %s
				%s
			}
		}
		reverse_proxy %s {
			flush_interval -1
		}
	}
}`, port, keyFile, redisAddr, redisOptions, upstream)
}
