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

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

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
