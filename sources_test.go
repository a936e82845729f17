package apikey

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// writeKeyFileAtomic replaces a key file the way the README asks writers
// to: a temporary file in the same folder, renamed over the old one.
func writeKeyFileAtomic(t *testing.T, path string, records ...keystore.Record) {
	t.Helper()
	data, err := json.MarshalIndent(map[string]any{"keys": records}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually retries check until it passes or 2 seconds (the bound
// for a key-file change) have passed.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestKeyFileLiveReload adds, revokes, rotates and breaks the key file while
// a steady client keeps sending a key that is valid in every version: that
// client must never see anything but 200.
func TestKeyFileLiveReload(t *testing.T) {
	steady := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_steady", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(1 << 40)})
	a := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_a", Role: "reader", Services: []string{"*"}})
	b := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_b", Role: "reader", Services: []string{"*"}})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	logPath := filepath.Join(t.TempDir(), "caddy.log")
	keyFile := gatewaytest.WriteKeyFile(t, steady.Record, a.Record)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[1]s
	}
}
http://127.0.0.1:%[2]d {
	handle /one/* {
		apikey {
			keys file %[3]s
			failed_auth_limit off
		}
		reverse_proxy %[4]s
	}
	handle /two/* {
		apikey {
			keys file %[3]s
			failed_auth_limit off
		}
		reverse_proxy %[4]s
	}
}`, logPath, port, keyFile, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	status := func(path string, k gatewaytest.Key) int {
		return gatewaytest.Send(t, "GET", base+path, k.Bearer()...).Status
	}

	// Both routes share one loaded copy and one watcher.
	abs, _ := filepath.Abs(keyFile)
	if refs, _ := keyfile.FilePoolReferences(abs); refs != 2 {
		t.Errorf("%d references to the key file, want 2 (one per route)", refs)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	var sent atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			for _, path := range []string{"/one/x", "/two/x"} {
				req, _ := http.NewRequest("GET", base+path, nil)
				req.Header.Set("Authorization", "Bearer "+steady.Secret)
				resp, err := gatewaytest.Client.Do(req)
				sent.Add(1)
				if err != nil || resp.StatusCode != 200 {
					bad.Add(1)
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
	}()

	if status("/one/x", a) != 200 || status("/one/x", b) != 401 {
		t.Fatal("initial keys wrong")
	}

	// Add b.
	writeKeyFileAtomic(t, keyFile, steady.Record, a.Record, b.Record)
	eventually(t, "added key works", func() bool { return status("/two/x", b) == 200 })

	// Revoke a.
	revoked := a.Record
	revoked.Revoked = true
	writeKeyFileAtomic(t, keyFile, steady.Record, revoked, b.Record)
	eventually(t, "revoked key refused", func() bool {
		r := gatewaytest.Send(t, "GET", base+"/one/x", a.Bearer()...)
		return r.Status == 401 && r.Err.Code == "revoked_key"
	})

	// Rotate b: a new secret, the old one in grace.
	b2 := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	rotated := b.Record
	rotated.Hash = b2.Record.Hash
	rotated.PreviousHashes = []keystore.PreviousHash{{Hash: b.Record.Hash, ValidUntil: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}
	writeKeyFileAtomic(t, keyFile, steady.Record, revoked, rotated)
	eventually(t, "rotated key works", func() bool { return status("/one/x", b2) == 200 })
	if r := gatewaytest.Send(t, "GET", base+"/one/x", b.Bearer()...); r.Status != 200 || r.Header.Get("Deprecation") != "true" {
		t.Errorf("old secret after rotation: %d, Deprecation %q", r.Status, r.Header.Get("Deprecation"))
	}

	// Break the file, in place: the last good keys stay, and the error is
	// logged with the file, record and field.
	if err := os.WriteFile(keyFile, []byte(`{"keys": [{"id": "k_steady", "hash": "`+steady.Record.Hash+`", "role": "reader"}, {"id": "k_x", "hash": "sha256:zz", "role": "reader"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := gatewaytest.WaitForLog(t, logPath, "key file rejected")
	if !strings.Contains(logs, `keys[1] (id \"k_x\"): hash: must be`) || !strings.Contains(logs, keyFile) {
		t.Errorf("the rejection does not name the file, record and field:\n%s", logs)
	}
	if status("/one/x", b2) != 200 {
		t.Error("a broken file replaced the last good keys")
	}

	// A slow in-place writer: the watcher may see half a file, which is
	// rejected, then the whole one.
	data, _ := json.Marshal(map[string]any{"keys": []keystore.Record{steady.Record, a.Record}})
	f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data[:len(data)/2])
	time.Sleep(2 * pollIntervalForTests())
	f.Write(data[len(data)/2:])
	f.Close()
	eventually(t, "the completed in-place write is read", func() bool { return status("/two/x", a) == 200 })
	if status("/two/x", b2) != 401 {
		t.Error("a key no longer in the file still works")
	}

	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of %d requests with a key valid in every version failed", bad.Load(), sent.Load())
	}
	if sent.Load() < 20 {
		t.Fatalf("only %d requests were sent during the changes", sent.Load())
	}
}

func pollIntervalForTests() time.Duration { return 500 * time.Millisecond }

// fakeKeyService is a real HTTP server speaking the key service protocol,
// with switches for the failures the gateway must ride out.
type fakeKeyService struct {
	*httptest.Server
	mu      sync.Mutex
	records map[string]keystore.Record // by every hash a record answers to
	mode    string                     // "", "down", "slow", "malformed", "badfield"
	delay   time.Duration
	calls   atomic.Int64
	bodies  []string
	auth    []string
}

func newFakeKeyService(t *testing.T, records ...keystore.Record) *fakeKeyService {
	s := &fakeKeyService{records: map[string]keystore.Record{}}
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

func (s *fakeKeyService) setMode(mode string) {
	s.mu.Lock()
	s.mode = mode
	s.mu.Unlock()
}

func (s *fakeKeyService) serve(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	mode, delay := s.mode, s.delay
	var req struct {
		Hash string `json:"hash"`
	}
	json.Unmarshal(body, &req)
	rec, known := s.records[req.Hash]
	s.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
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

type remoteGateway struct {
	url, logPath, admin string
	svc                 *fakeKeyService
	up                  *gatewaytest.Upstream
}

func startRemoteGateway(t *testing.T, cache string, records ...keystore.Record) *remoteGateway {
	t.Setenv("APIKEY_TEST_KEYSVC_TOKEN", "keysvc-token-0003")
	g := &remoteGateway{svc: newFakeKeyService(t, records...), up: gatewaytest.NewUpstream(t), logPath: filepath.Join(t.TempDir(), "caddy.log")}
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d/x", port)
	g.admin = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	gatewaytest.Start(t, fmt.Sprintf(`{
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
			timeout 300ms
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
}`, g.logPath, port, g.svc.URL, cache, filepath.Join(t.TempDir(), "counters.json"), g.up.Addr(), adminPort))
	return g
}

// TestHTTPSourceProtocolAndCache: hit, miss, negative caching, the request
// the service gets, rotation, and expiry checked against the clock.
func TestHTTPSourceProtocolAndCache(t *testing.T) {
	known := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_remote", Role: "reader"})
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	known.Record.PreviousHashes = []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}
	soon := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_soon", Role: "reader", ExpiresAt: time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339)})
	g := startRemoteGateway(t, "ttl 1h\n\t\t\tstale 2h\n\t\t\tnegative_ttl 1h", known.Record, soon.Record)

	if r := gatewaytest.Send(t, "GET", g.url, known.Bearer()...); r.Status != 200 {
		t.Fatalf("known key: %d %s", r.Status, r.Body)
	}
	g.svc.mu.Lock()
	body, auth := g.svc.bodies[0], g.svc.auth[0]
	g.svc.mu.Unlock()
	if body != `{"hash":"`+known.Record.Hash+`"}` {
		t.Errorf("the service got %s, want the hash", body)
	}
	if strings.Contains(body, known.Secret) {
		t.Error("the raw key left the gateway")
	}
	if auth != "Bearer keysvc-token-0003" {
		t.Errorf("the service got Authorization %q", auth)
	}
	for i := 0; i < 5; i++ {
		gatewaytest.Send(t, "GET", g.url, known.Bearer()...)
	}
	if n := g.svc.calls.Load(); n != 1 {
		t.Errorf("cache hits made %d calls, want 1", n)
	}

	unknown := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	for i := 0; i < 3; i++ {
		if r := gatewaytest.Send(t, "GET", g.url, unknown.Bearer()...); r.Status != 401 || r.Err.Code != "invalid_key" {
			t.Fatalf("unknown key: %d %q", r.Status, r.Err.Code)
		}
	}
	if n := g.svc.calls.Load(); n != 2 {
		t.Errorf("404 not cached: %d calls, want 2", n)
	}
	// Malformed keys never reach the service.
	gatewaytest.Send(t, "GET", g.url, "X-API-Key", "DEV_API_not_a_key")
	if n := g.svc.calls.Load(); n != 2 {
		t.Errorf("a malformed key reached the service")
	}

	if r := gatewaytest.Send(t, "GET", g.url, old.Bearer()...); r.Status != 200 || r.Header.Get("Deprecation") != "true" {
		t.Errorf("old secret via the service: %d, Deprecation %q", r.Status, r.Header.Get("Deprecation"))
	}

	// Expiry is checked per request against the clock, not when fetched.
	if r := gatewaytest.Send(t, "GET", g.url, soon.Bearer()...); r.Status != 200 {
		t.Fatalf("key before expiry: %d", r.Status)
	}
	calls := g.svc.calls.Load()
	time.Sleep(time.Until(time.Now().Add(1600 * time.Millisecond).Truncate(time.Second)))
	eventually(t, "cached key expires", func() bool {
		r := gatewaytest.Send(t, "GET", g.url, soon.Bearer()...)
		return r.Status == 401 && r.Err.Code == "expired_key"
	})
	if g.svc.calls.Load() != calls {
		t.Error("expiry needed a call to the service")
	}
}

// TestHTTPSourceSingleflight: 100 concurrent first requests for one key make
// one call.
func TestHTTPSourceSingleflight(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_many", Role: "reader"})
	g := startRemoteGateway(t, "ttl 1h\n\t\t\tstale 2h", k.Record)
	g.svc.mu.Lock()
	g.svc.delay = 150 * time.Millisecond
	g.svc.mu.Unlock()
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", g.url, nil)
			req.Header.Set("X-API-Key", k.Secret)
			resp, err := gatewaytest.Client.Do(req)
			if err == nil {
				if resp.StatusCode == 200 {
					ok.Add(1)
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 100 || g.svc.calls.Load() != 1 {
		t.Fatalf("%d of 100 passed with %d calls; want 100 and 1", ok.Load(), g.svc.calls.Load())
	}
}

// TestHTTPSourceStaleWhileRevalidate: past ttl the cached record is served
// at once while one background refresh runs.
func TestHTTPSourceStaleWhileRevalidate(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_swr", Role: "reader"})
	g := startRemoteGateway(t, "ttl 300ms\n\t\t\tstale 1h", k.Record)
	gatewaytest.Send(t, "GET", g.url, k.Bearer()...)
	time.Sleep(400 * time.Millisecond)
	g.svc.mu.Lock()
	g.svc.delay = 250 * time.Millisecond // a refresh in the request path would show
	g.svc.mu.Unlock()
	for i := 0; i < 5; i++ {
		start := time.Now()
		if r := gatewaytest.Send(t, "GET", g.url, k.Bearer()...); r.Status != 200 {
			t.Fatalf("stale request: %d", r.Status)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("a stale hit waited %v for the service", d)
		}
	}
	eventually(t, "one background refresh", func() bool { return g.svc.calls.Load() == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := g.svc.calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2: one fetch and one refresh", n)
	}
}

// TestHTTPSourceFailures: with the service down, a warm key works and a cold
// one gets 503 (never 401); a slow service is cut at the timeout; malformed
// answers and records with a bad field are failures, logged once per interval.
func TestHTTPSourceFailures(t *testing.T) {
	warm := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_warm", Role: "reader"})
	cold := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_cold", Role: "reader"})
	g := startRemoteGateway(t, "ttl 100ms\n\t\t\tstale 1h", warm.Record, cold.Record)
	if r := gatewaytest.Send(t, "GET", g.url, warm.Bearer()...); r.Status != 200 {
		t.Fatalf("warming: %d", r.Status)
	}
	time.Sleep(150 * time.Millisecond) // past ttl: every request now tries a refresh

	for _, mode := range []string{"down", "malformed", "badfield"} {
		g.svc.setMode(mode)
		for i := 0; i < 3; i++ {
			if r := gatewaytest.Send(t, "GET", g.url, warm.Bearer()...); r.Status != 200 {
				t.Errorf("%s: warm key got %d", mode, r.Status)
			}
			r := gatewaytest.Send(t, "GET", g.url, cold.Bearer()...)
			if r.Status != 503 || r.Err.Code != "unavailable" || r.Header.Get("Retry-After") == "" {
				t.Errorf("%s: cold key got %d %q (Retry-After %q), want 503 unavailable", mode, r.Status, r.Err.Code, r.Header.Get("Retry-After"))
			}
		}
	}

	g.svc.setMode("slow")
	g.svc.mu.Lock()
	g.svc.delay = 2 * time.Second
	g.svc.mu.Unlock()
	start := time.Now()
	r := gatewaytest.Send(t, "GET", g.url, cold.Bearer()...)
	if elapsed := time.Since(start); r.Status != 503 || elapsed > 800*time.Millisecond {
		t.Errorf("slow service: %d after %v, want 503 soon after the 300ms timeout", r.Status, elapsed)
	}

	logs := gatewaytest.WaitForLog(t, g.logPath, "key service failed")
	if n := strings.Count(logs, "key service failed"); n != 1 {
		t.Errorf("the failure was logged %d times, want once per interval", n)
	}
	if strings.Contains(logs, warm.Secret) || strings.Contains(logs, strings.TrimPrefix(cold.Record.Hash, "sha256:")) {
		t.Error("a key or hash reached the log")
	}

	// The service recovers; the cold key is admitted.
	g.svc.mu.Lock()
	g.svc.delay = 0
	g.svc.mu.Unlock()
	g.svc.setMode("")
	if r := gatewaytest.Send(t, "GET", g.url, cold.Bearer()...); r.Status != 200 {
		t.Errorf("after recovery: %d", r.Status)
	}
}

// TestHTTPSourceBadAnswersAreLogged: an answer that is not JSON, or a
// record with a bad field, is a service failure (503), logged with what was
// wrong.
func TestHTTPSourceBadAnswersAreLogged(t *testing.T) {
	for mode, want := range map[string]string{
		"malformed": `record (id \"\") is invalid: unexpected EOF`,
		"badfield":  `record (id \"k_bad_answer\") is invalid: role: unknown role \"superuser\"`,
	} {
		t.Run(mode, func(t *testing.T) {
			k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_bad_answer", Role: "reader"})
			g := startRemoteGateway(t, "ttl 1m", k.Record)
			g.svc.setMode(mode)
			if r := gatewaytest.Send(t, "GET", g.url, k.Bearer()...); r.Status != 503 {
				t.Fatalf("%s answer: %d, want 503", mode, r.Status)
			}
			if logs := gatewaytest.WaitForLog(t, g.logPath, "key service failed"); !strings.Contains(logs, want) {
				t.Errorf("the log does not say what was wrong (%s):\n%s", want, logs)
			}
		})
	}
}
