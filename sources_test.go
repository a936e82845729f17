package apikey

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// eventually retries check until it passes or 2 seconds have passed: a
// key-file change is in use within a second (docs/key-sources.md), and the
// second one is the margin of a loaded machine.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	gatewaytest.WaitUntil(t, what, 2*time.Second, check)
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

// TestHTTPSourceProtocolAndCache: hit, miss, negative caching, the request
// the service gets, rotation, and expiry checked against the clock.
func TestHTTPSourceProtocolAndCache(t *testing.T) {
	known := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_remote", Role: "reader"})
	old := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	known.Record.PreviousHashes = []keystore.PreviousHash{{Hash: old.Record.Hash, ValidUntil: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}
	// Expiry is in whole seconds: 2 to 3 s from now, time enough for the
	// requests before it on a loaded machine (1.5 s, cut to 0.5 to 1.5,
	// was not under -race beside a second full run).
	soonExpiry := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second)
	soon := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_soon", Role: "reader", ExpiresAt: soonExpiry.Format(time.RFC3339)})
	g := gatewaytest.StartRemote(t, "ttl 1h\n\t\t\tstale 2h\n\t\t\tnegative_ttl 1h", known.Record, soon.Record)

	if r := gatewaytest.Send(t, "GET", g.URL, known.Bearer()...); r.Status != 200 {
		t.Fatalf("known key: %d %s", r.Status, r.Body)
	}
	body, auth := g.Svc.Request(0)
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
		gatewaytest.Send(t, "GET", g.URL, known.Bearer()...)
	}
	if n := g.Svc.Calls.Load(); n != 1 {
		t.Errorf("cache hits made %d calls, want 1", n)
	}

	unknown := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	for i := 0; i < 3; i++ {
		if r := gatewaytest.Send(t, "GET", g.URL, unknown.Bearer()...); r.Status != 401 || r.Err.Code != "invalid_key" {
			t.Fatalf("unknown key: %d %q", r.Status, r.Err.Code)
		}
	}
	if n := g.Svc.Calls.Load(); n != 2 {
		t.Errorf("404 not cached: %d calls, want 2", n)
	}
	// Malformed keys never reach the service.
	gatewaytest.Send(t, "GET", g.URL, "X-API-Key", "DEV_API_not_a_key")
	if n := g.Svc.Calls.Load(); n != 2 {
		t.Errorf("a malformed key reached the service")
	}

	if r := gatewaytest.Send(t, "GET", g.URL, old.Bearer()...); r.Status != 200 || r.Header.Get("Deprecation") != "true" {
		t.Errorf("old secret via the service: %d, Deprecation %q", r.Status, r.Header.Get("Deprecation"))
	}

	// Expiry is checked per request against the clock, not when fetched.
	if r := gatewaytest.Send(t, "GET", g.URL, soon.Bearer()...); r.Status != 200 {
		t.Fatalf("key before expiry: %d", r.Status)
	}
	calls := g.Svc.Calls.Load()
	time.Sleep(time.Until(soonExpiry))
	eventually(t, "cached key expires", func() bool {
		r := gatewaytest.Send(t, "GET", g.URL, soon.Bearer()...)
		return r.Status == 401 && r.Err.Code == "expired_key"
	})
	if g.Svc.Calls.Load() != calls {
		t.Error("expiry needed a call to the service")
	}
}

// TestHTTPSourceSingleflight: 100 concurrent first requests for one key make
// one call.
func TestHTTPSourceSingleflight(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_many", Role: "reader"})
	// The one call waits until every request has missed: the timeout must
	// outlast that wait, however loaded the machine (300 ms did not).
	g := gatewaytest.StartRemoteTimeout(t, "1m", "ttl 1h\n\t\t\tstale 2h", k.Record)
	misses := func() float64 {
		_, body := gatewaytest.Admin(t, "GET", g.Admin, "/metrics")
		v, _ := gatewaytest.MetricValue(t, body, "caddy_apikey_cache_requests_total", map[string]string{"result": "miss"})
		return v
	}
	before := misses()
	// The service answers once all 100 requests have missed the cache:
	// each then waits on the one call in flight.
	release := g.Svc.Hold()
	defer release()
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", g.URL, nil)
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
	gatewaytest.WaitUntil(t, "100 cache misses", 30*time.Second, func() bool { return misses()-before >= 100 })
	release()
	wg.Wait()
	if ok.Load() != 100 || g.Svc.Calls.Load() != 1 {
		t.Fatalf("%d of 100 passed with %d calls; want 100 and 1", ok.Load(), g.Svc.Calls.Load())
	}
}

// TestHTTPSourceStaleWhileRevalidate: past ttl the cached record is served
// at once while one background refresh runs.
func TestHTTPSourceStaleWhileRevalidate(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_swr", Role: "reader"})
	g := gatewaytest.StartRemote(t, "ttl 300ms\n\t\t\tstale 1h", k.Record)
	gatewaytest.Send(t, "GET", g.URL, k.Bearer()...)
	time.Sleep(400 * time.Millisecond)
	// The service holds its answers: a refresh in the request path would
	// hold the stale requests too, until the client gave up.
	release := g.Svc.Hold()
	defer release()
	for i := 0; i < 5; i++ {
		if r := gatewaytest.Send(t, "GET", g.URL, k.Bearer()...); r.Status != 200 {
			t.Fatalf("stale request %d while the refresh is held: %d", i, r.Status)
		}
	}
	eventually(t, "one background refresh", func() bool { return g.Svc.Calls.Load() == 2 })
	release()
	time.Sleep(300 * time.Millisecond)
	if n := g.Svc.Calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2: one fetch and one refresh", n)
	}
}

// TestHTTPSourceFailures: with the service down, a warm key works and a cold
// one gets 503 (never 401); a slow service is cut at the timeout (1 s here,
// against an answer that would take 10 s); malformed answers and records
// with a bad field are failures, logged once per interval.
func TestHTTPSourceFailures(t *testing.T) {
	warm := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_warm", Role: "reader"})
	cold := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_cold", Role: "reader"})
	g := gatewaytest.StartRemoteTimeout(t, "1s", "ttl 100ms\n\t\t\tstale 1h", warm.Record, cold.Record)
	if r := gatewaytest.Send(t, "GET", g.URL, warm.Bearer()...); r.Status != 200 {
		t.Fatalf("warming: %d", r.Status)
	}
	time.Sleep(150 * time.Millisecond) // past ttl: every request now tries a refresh

	for _, mode := range []string{"down", "malformed", "badfield"} {
		g.Svc.SetMode(mode)
		for i := 0; i < 3; i++ {
			if r := gatewaytest.Send(t, "GET", g.URL, warm.Bearer()...); r.Status != 200 {
				t.Errorf("%s: warm key got %d", mode, r.Status)
			}
			r := gatewaytest.Send(t, "GET", g.URL, cold.Bearer()...)
			if r.Status != 503 || r.Err.Code != "unavailable" || r.Header.Get("Retry-After") == "" {
				t.Errorf("%s: cold key got %d %q (Retry-After %q), want 503 unavailable", mode, r.Status, r.Err.Code, r.Header.Get("Retry-After"))
			}
		}
	}

	g.Svc.SetMode("slow")
	g.Svc.SetDelay(10 * time.Second)
	start := time.Now()
	r := gatewaytest.Send(t, "GET", g.URL, cold.Bearer()...)
	if elapsed := time.Since(start); r.Status != 503 || elapsed < time.Second || elapsed > 5*time.Second {
		t.Errorf("slow service: %d after %v, want 503 at the 1s timeout, long before the service's 10s answer", r.Status, elapsed)
	}

	logs := gatewaytest.WaitForLog(t, g.Log, "key service failed")
	if n := strings.Count(logs, "key service failed"); n != 1 {
		t.Errorf("the failure was logged %d times, want once per interval", n)
	}
	if strings.Contains(logs, warm.Secret) || strings.Contains(logs, strings.TrimPrefix(cold.Record.Hash, "sha256:")) {
		t.Error("a key or hash reached the log")
	}

	// The service recovers; the cold key is admitted.
	g.Svc.SetDelay(0)
	g.Svc.SetMode("")
	if r := gatewaytest.Send(t, "GET", g.URL, cold.Bearer()...); r.Status != 200 {
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
			g := gatewaytest.StartRemote(t, "ttl 1m", k.Record)
			g.Svc.SetMode(mode)
			if r := gatewaytest.Send(t, "GET", g.URL, k.Bearer()...); r.Status != 503 {
				t.Fatalf("%s answer: %d, want 503", mode, r.Status)
			}
			if logs := gatewaytest.WaitForLog(t, g.Log, "key service failed"); !strings.Contains(logs, want) {
				t.Errorf("the log does not say what was wrong (%s):\n%s", want, logs)
			}
		})
	}
}

// TestKeyServiceSlotsPerAddress: with a key service that answers in 1.5 s,
// one address sending 300 concurrent made-up keys gets throttled instead of
// taking every call slot: a valid, uncached key from another address still
// gets 200, and the service sees at most the throttle limit plus the
// per-address cap in calls.
func TestKeyServiceSlotsPerAddress(t *testing.T) {
	valid := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_slots_valid", Role: "reader"})
	svc := gatewaytest.NewKeyService(t, valid.Record)
	svc.SetDelay(1500 * time.Millisecond)
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys http %s {
			timeout 5s
		}
		failed_auth_limit 20/m
	}
	reverse_proxy %s
}`, port, svc.URL, up.Addr()))
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)

	const wave, limit, perAddressCap = 300, 20, 8
	done := make(chan []int)
	go func() {
		done <- gatewaytest.Burst(wave, func(int) *http.Request {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("X-API-Key", gatewaytest.NewKey(t, keystore.Dev, keystore.Record{}).Secret)
			return req
		})
	}()
	time.Sleep(300 * time.Millisecond) // the wave is in flight
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+valid.Secret)
	resp, err := other.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("a valid key from another address during the wave: %d, want 200", resp.StatusCode)
	}
	codes := gatewaytest.Tally(<-done)
	if codes[503] != 0 || codes[-1] != 0 {
		t.Errorf("the wave got %v: no 503s or dropped connections expected", codes)
	}
	if codes[401] > perAddressCap || codes[401]+codes[429] != wave {
		t.Errorf("the wave got %v, want at most %d × 401 and the rest 429", codes, perAddressCap)
	}
	if calls := svc.Calls.Load(); calls > limit+perAddressCap+1 {
		t.Errorf("the key service got %d calls, want at most %d (limit + cap) + 1 (the valid key)", calls, limit+perAddressCap)
	}
	t.Logf("wave: %v; key service calls: %d", codes, svc.Calls.Load())
}
