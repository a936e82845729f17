package gatewaytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// KeyService is a real HTTP server speaking the key service protocol: it
// answers a POSTed {"hash"} with the record that has that hash (or one of
// its previous hashes), or 404; it counts its calls, records what it got,
// and has switches for the failures the gateway must ride out.
type KeyService struct {
	*httptest.Server
	// Calls counts the requests the service got.
	Calls   atomic.Int64
	mu      sync.Mutex
	records map[string]keystore.Record // by every hash a record answers to
	mode    string
	delay   time.Duration
	gate    chan struct{} // when set, answers wait for it to close
	bodies  []string
	auth    []string
}

// NewKeyService starts a KeyService with records until the test ends.
func NewKeyService(t testing.TB, records ...keystore.Record) *KeyService {
	s := &KeyService{records: map[string]keystore.Record{}}
	for _, r := range records {
		s.records[r.Hash] = r
		for _, p := range r.PreviousHashes {
			s.records[p.Hash] = r
		}
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// SetMode sets how the service answers: "" as it should, "down" (500),
// "malformed" (a JSON body cut short), "badfield" (a record with an
// unknown role), "slow" (as "", after the delay).
func (s *KeyService) SetMode(mode string) {
	s.mu.Lock()
	s.mode = mode
	s.mu.Unlock()
}

// SetDelay makes every answer wait d first.
func (s *KeyService) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Hold makes answers wait until release is called.
func (s *KeyService) Hold() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// Request is the body and the Authorization header of the i-th request
// the service got.
func (s *KeyService) Request(i int) (body, authorization string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bodies[i], s.auth[i]
}

func (s *KeyService) serve(w http.ResponseWriter, r *http.Request) {
	s.Calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	mode, delay, gate := s.mode, s.delay, s.gate
	var req struct {
		Hash string `json:"hash"`
	}
	json.Unmarshal(body, &req)
	rec, known := s.records[req.Hash]
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done(): // the gateway gave up
			return
		}
	}
	if gate != nil {
		<-gate
	}
	switch {
	case r.Method != "POST":
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
	case mode == "down":
		http.Error(w, "down", http.StatusInternalServerError)
	case mode == "malformed":
		io.WriteString(w, `{"id": "k_broken", "hash": `)
	case mode == "badfield":
		rec.Role = "superuser"
		json.NewEncoder(w).Encode(rec)
	case !known:
		http.Error(w, "unknown", http.StatusNotFound)
	default:
		json.NewEncoder(w).Encode(rec)
	}
}

// Remote is a running Caddy with its admin endpoint, its log in a file,
// and one route whose keys come from a KeyService (asked with a bearer
// token, a 5 s timeout unless StartRemoteTimeout says otherwise: a test
// that is not about the timeout must not meet it on a loaded machine), in
// front of an Upstream.
type Remote struct {
	// URL is the route's /x; Admin the admin endpoint; Log Caddy's log.
	URL, Admin, Log string
	Svc             *KeyService
	Up              *Upstream
}

// StartRemote starts a Remote with the given cache settings (the lines of
// the cache block) and the key service's records until the test ends.
func StartRemote(t *testing.T, cache string, records ...keystore.Record) *Remote {
	t.Helper()
	return StartRemoteTimeout(t, "5s", cache, records...)
}

// StartRemoteTimeout is StartRemote with the key service's timeout: longer
// than any Hold of the service that a request waits through.
func StartRemoteTimeout(t *testing.T, timeout, cache string, records ...keystore.Record) *Remote {
	t.Helper()
	t.Setenv("APIKEY_TEST_KEYSVC_TOKEN", "keysvc-token-0003")
	g := &Remote{Svc: NewKeyService(t, records...), Up: NewUpstream(t), Log: filepath.Join(t.TempDir(), "caddy.log")}
	port, adminPort := Port(t), Port(t)
	g.URL = fmt.Sprintf("http://127.0.0.1:%d/x", port)
	g.Admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	Start(t, fmt.Sprintf(`{
	admin 127.0.0.1:%[7]d
	persist_config off
	log {
		output file %[1]s
	}
}
http://127.0.0.1:%[2]d {
	apikey {
		keys http %[3]s/lookup {
			header Authorization "Bearer {env.APIKEY_TEST_KEYSVC_TOKEN}"
			timeout %[8]s
		}
		cache {
			%[4]s
		}
		failed_auth_limit off
		counters memory {
			file %[5]s
		}
	}
	reverse_proxy %[6]s
}`, g.Log, port, g.Svc.URL, cache, filepath.Join(t.TempDir(), "counters.json"), g.Up.Addr(), adminPort, timeout))
	return g
}
