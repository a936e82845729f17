package apikey

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestMain points HOME and the XDG directories at a temporary folder, so that
// the Caddy instances the tests start never write into the real ones.
func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "caddy-apikey-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The go command that builds cmd/caddy for the process tests finds its
	// caches through HOME too: pin them first, so they stay warm.
	if os.Getenv("GOCACHE") == "" {
		if cache, err := os.UserCacheDir(); err == nil {
			os.Setenv("GOCACHE", filepath.Join(cache, "go-build"))
		}
	}
	if os.Getenv("GOPATH") == "" {
		if home, err := os.UserHomeDir(); err == nil {
			os.Setenv("GOPATH", filepath.Join(home, "go"))
		}
	}
	// Caddy computed its autosave path and default storage from HOME and
	// the XDG folders when its package was initialized, before this ran:
	// remember them (TestCaddyStaysOutOfHome checks they stay untouched),
	// then point them into the temporary folder too.
	realCaddyDirs = []string{filepath.Dir(caddy.ConfigAutosavePath), caddy.DefaultStorage.Path}
	testHome = dir
	for _, v := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"} {
		os.Setenv(v, filepath.Join(dir, strings.ToLower(v)))
	}
	caddy.ConfigAutosavePath = filepath.Join(caddy.AppConfigDir(), "autosave.json")
	caddy.DefaultStorage.Path = caddy.AppDataDir()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testHome is the temporary folder TestMain points HOME and the XDG folders
// at; realCaddyDirs are the folders Caddy would have written to without it.
var (
	testHome      string
	realCaddyDirs []string
)

// TestCaddyStaysOutOfHome loads and stops a config, as every Caddy test
// does, and checks that Caddy's autosave and storage paths are in the
// temporary folder, that the autosave landed there, and that nothing under
// the real HOME's Caddy folders mentions this test's config or this
// process's instance id (other Caddy processes may write there meanwhile).
func TestCaddyStaysOutOfHome(t *testing.T) {
	for name, p := range map[string]string{
		"caddy.ConfigAutosavePath": caddy.ConfigAutosavePath,
		"caddy.DefaultStorage":     caddy.DefaultStorage.Path,
		"caddy.AppDataDir()":       caddy.AppDataDir(),
		"caddy.AppConfigDir()":     caddy.AppConfigDir(),
	} {
		if rel, err := filepath.Rel(testHome, p); err != nil || !filepath.IsLocal(rel) {
			t.Errorf("%s is %s, outside the tests' folder %s", name, p, testHome)
		}
	}
	port := freePort(t)
	marker := fmt.Sprintf("home-test-%d-%d", port, time.Now().UnixNano())
	startCaddy(t, fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\trespond %s\n}\n", port, marker))
	if err := stopCaddy(); err != nil {
		t.Fatal(err)
	}
	if saved, err := os.ReadFile(caddy.ConfigAutosavePath); err != nil || !strings.Contains(string(saved), marker) {
		t.Errorf("the config was not autosaved in the tests' folder (%v), so the check below proves nothing", err)
	}
	id, err := caddy.InstanceID()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range realCaddyDirs {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil // a folder that does not exist was not written to
			}
			data, _ := os.ReadFile(path)
			if strings.Contains(string(data), marker) || strings.Contains(string(data), id.String()) {
				t.Errorf("the tests wrote %s, under the real HOME", path)
			}
			return nil
		})
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCaddy adapts a Caddyfile and runs it in this process until the test
// ends. Tests that start Caddy must not run in parallel: there is one
// running config per process.
func startCaddy(t *testing.T, caddyfile string) {
	t.Helper()
	if err := loadCaddy(caddyfile); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		if err := stopCaddy(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
}

// stopCaddy stops the running config; stopping when none runs is fine, so a
// test may stop Caddy early and still have the cleanup call it.
func stopCaddy() error { return caddy.Stop() }

func loadCaddy(caddyfile string) error {
	cfg, err := adapt(caddyfile)
	if err != nil {
		return err
	}
	err = caddy.Load(cfg, true)
	// A reload stops the old servers, which close their idle connections; a
	// kept-alive connection can still look open to the shared client for a
	// moment and meet EOF. Start the next request on a fresh connection.
	client.CloseIdleConnections()
	return err
}

// seenRequest is what the upstream received.
type seenRequest struct {
	Method string
	Path   string
	Header http.Header
}

// upstream is a real HTTP server that records every request it gets.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()})
		u.mu.Unlock()
		io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(u.Close)
	return u
}

// addr is the upstream's host:port, for reverse_proxy.
func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *upstream) last(t *testing.T) seenRequest {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return u.seen[len(u.seen)-1]
}

// testKey is a generated key and its record. Failure messages name the id,
// never the secret.
type testKey struct {
	secret string
	record keystore.Record
}

func newKey(t *testing.T, typ keystore.Type, rec keystore.Record) testKey {
	t.Helper()
	secret, err := keystore.Generate(typ)
	if err != nil {
		t.Fatal(err)
	}
	rec.Hash = keystore.Sum(secret).Encode()
	return testKey{secret: secret, record: rec}
}

// writeKeyFile writes records as a key file and returns its path.
func writeKeyFile(t *testing.T, records ...keystore.Record) string {
	t.Helper()
	data, err := json.MarshalIndent(map[string]any{"keys": records}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// response is what a client got back from the gateway.
type response struct {
	status int
	header http.Header
	body   string
	err    struct {
		Status  int    `json:"status"`
		Code    string `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: reloadTolerant{http.DefaultTransport}}

// reloadTolerant sends a request without a body once more when its
// connection was closed before any answer came. Caddy does that to a
// handful of connections in the moment after a reload: the old servers
// shut down after caddy.Load returns, and one may accept a connection and
// close it unanswered (plain `respond` routes show it too, about 1 in 30
// requests sent right after a reload). Browsers and HTTP libraries retry
// such requests; a request that was answered, or that has a body, is never
// sent twice.
type reloadTolerant struct{ next http.RoundTripper }

func (rt reloadTolerant) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	if err != nil && req.Body == nil && closedUnanswered(err) {
		return rt.next.RoundTrip(req)
	}
	return resp, err
}

func closedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// send makes one request; headers come as name, value pairs.
func send(t *testing.T, method, url string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if resp.Header.Get("Content-Type") == "application/json" {
		// Every error format: {"error": {...}} (default, openai) or
		// {"error": "<message>", "code", "reason"} (ollama).
		var wrapper struct {
			Error  *json.RawMessage `json:"error"`
			Code   string           `json:"code"`
			Reason string           `json:"reason"`
		}
		if err := json.Unmarshal(body, &wrapper); err != nil || wrapper.Error == nil {
			t.Fatalf("%s %s: error body has no \"error\": %q", method, url, body)
		}
		if err := json.Unmarshal(*wrapper.Error, &r.err.Message); err == nil {
			r.err.Status, r.err.Code, r.err.Reason = resp.StatusCode, wrapper.Code, wrapper.Reason
		} else if err := json.Unmarshal(*wrapper.Error, &r.err); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func writeFileBytes(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

// burst sends n requests all at once and returns each one's status, -1 for
// a transport error.
func burst(n int, newRequest func(i int) *http.Request) []int {
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newRequest(i)
			<-start
			resp, err := client.Do(req)
			if err != nil {
				statuses[i] = -1
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	return statuses
}

// tally counts statuses.
func tally(statuses []int) map[int]int {
	codes := map[int]int{}
	for _, s := range statuses {
		codes[s]++
	}
	return codes
}
