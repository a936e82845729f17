package apikey

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyservice"
)

// benchKeys makes n keys with a quota that benchmarks cannot use up.
func benchKeys(b *testing.B, n int, rate string) []gatewaytest.Key {
	t := &testing.T{}
	keys := make([]gatewaytest.Key, n)
	for i := range keys {
		keys[i] = gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: fmt.Sprintf("k_bench_%d", i), Role: "writer",
			Services: []string{"ollama"}, QuotaPerDay: int64p(1 << 50), Rate: rate})
	}
	return keys
}

// benchHandler provisions a handler outside Caddy's server, as Caddy would,
// with logging off (a production logger at info level writes a line per
// refusal: BenchmarkRejectMalformedLogged measures that).
func benchHandler(b *testing.B, keysJSON string, extra func(*Handler)) *Handler {
	b.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	h := &Handler{KeysRaw: json.RawMessage(keysJSON), Service: "ollama", FailedAuthLimit: "20/m",
		CountersRaw: json.RawMessage(`{"store": "memory", "file": "` + b.TempDir() + `/counters.json"}`),
		UsageFile:   b.TempDir() + "/usage.json"}
	if extra != nil {
		extra(h)
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	h.logger = zap.NewNop()
	return h
}

func fileSourceJSON(b *testing.B, keys []gatewaytest.Key) string {
	b.Helper()
	records := make([]keystore.Record, len(keys))
	for i, k := range keys {
		records[i] = k.Record
	}
	data, _ := json.Marshal(map[string]any{"keys": records})
	path := b.TempDir() + "/keys.json"
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return `{"source": "file", "path": "` + path + `"}`
}

// benchRequest is a request as Caddy's server hands it to handlers.
func benchRequest(path string) *http.Request {
	req := httptest.NewRequest("GET", path, nil)
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), nil, nil)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, "192.0.2.10")
	return req
}

// replacerReset returns a function that gives req's replacer back the
// state benchRequest left it in (no placeholder set or provider added), as
// on a new request, without allocating: the handler's placeholders are
// then measured as the server meets them, once per request.
func replacerReset(req *http.Request) func() {
	repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	fresh := *repl
	return func() { *repl = fresh }
}

var nextOK = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// discard is a ResponseWriter that keeps the status and headers and drops
// the body, so that benchmarks measure the handler, not a growing buffer.
type discard struct {
	h    http.Header
	code int
}

func newDiscard() *discard                     { return &discard{h: http.Header{}} }
func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(code int)        { d.code = code }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) reset()                      { clear(d.h); d.code = http.StatusOK }

// runServe runs the handler b.N times with the key in Authorization.
func runServe(b *testing.B, h *Handler, secret string, wantStatus int) {
	b.Helper()
	req := benchRequest("/api/tags")
	reset := replacerReset(req)
	w := newDiscard()
	auth := []string{"Bearer " + secret}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		reset()
		req.Header["Authorization"] = auth
		if err := h.ServeHTTP(w, req, nextOK); err != nil {
			b.Fatal(err)
		}
	}
	if w.code != wantStatus {
		b.Fatalf("status %d, want %d", w.code, wantStatus)
	}
}

// BenchmarkServeHTTP is the full check of an admitted request with a key
// file: read the key, check its format and checksum, hash it, look it up,
// check expiry, revocation, IP, role and service, count it, write the
// rate-limit headers, set the placeholders, count usage and metrics.
func BenchmarkServeHTTP(b *testing.B) {
	keys := benchKeys(b, 1, "")
	h := benchHandler(b, fileSourceJSON(b, keys), nil)
	runServe(b, h, keys[0].Secret, http.StatusOK)
}

// BenchmarkServeHTTPFull adds a burst rate and an upstream credential.
func BenchmarkServeHTTPFull(b *testing.B) {
	keys := benchKeys(b, 1, "1000000/s")
	h := benchHandler(b, fileSourceJSON(b, keys), func(h *Handler) {
		h.UpstreamAuth = &headers.Credential{Header: "Authorization", Value: "Bearer upstream-token"}
	})
	runServe(b, h, keys[0].Secret, http.StatusOK)
}

// BenchmarkServeHTTPParallel runs admitted requests for 1,000 keys on every
// core: the per-request work must not contend on a lock.
func BenchmarkServeHTTPParallel(b *testing.B) {
	keys := benchKeys(b, 1000, "")
	h := benchHandler(b, fileSourceJSON(b, keys), nil)
	auth := make([][]string, len(keys))
	for i, k := range keys {
		auth[i] = []string{"Bearer " + k.Secret}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest("/api/tags")
		reset := replacerReset(req)
		w := newDiscard()
		i := int(next.Add(1)) * 97
		for pb.Next() {
			w.reset()
			reset()
			req.Header["Authorization"] = auth[i%len(auth)]
			i++
			if err := h.ServeHTTP(w, req, nextOK); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkServeHTTPKeyService is the full check with an HTTP key service
// behind a warm cache.
func BenchmarkServeHTTPKeyService(b *testing.B) {
	keys := benchKeys(b, 1, "")
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(keys[0].Record)
	}))
	defer svc.Close()
	h := benchHandler(b, `{"source": "http", "url": "`+svc.URL+`", "cache": {"ttl": 3600000000000, "stale": 7200000000000}}`, nil)
	runServe(b, h, keys[0].Secret, http.StatusOK)
}

// BenchmarkServeHTTPKeyServiceMiss is the miss path: every request asks
// the key service (on loopback), as after a purge.
func BenchmarkServeHTTPKeyServiceMiss(b *testing.B) {
	keys := benchKeys(b, 1, "")
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(keys[0].Record)
	}))
	defer svc.Close()
	h := benchHandler(b, `{"source": "http", "url": "`+svc.URL+`"}`, nil)
	cache := h.source.(*keyservice.HTTPSource).CacheOf()
	req := benchRequest("/api/tags")
	reset := replacerReset(req)
	w := newDiscard()
	auth := []string{"Bearer " + keys[0].Secret}
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		reset()
		cache.PurgeAll()
		req.Header["Authorization"] = auth
		if err := h.ServeHTTP(w, req, nextOK); err != nil {
			b.Fatal(err)
		}
	}
	if w.code != http.StatusOK {
		b.Fatalf("status %d", w.code)
	}
}

// BenchmarkRejectMalformed: a key that fails the format check is refused
// before any lookup.
func BenchmarkRejectMalformed(b *testing.B) {
	keys := benchKeys(b, 1, "")
	h := benchHandler(b, fileSourceJSON(b, keys), func(h *Handler) { h.FailedAuthLimit = "off" })
	runServe(b, h, "DEV_API_thisisnotakeyatallnotakeyatallxyzw", http.StatusUnauthorized)
}

// BenchmarkRejectMalformedLogged is BenchmarkRejectMalformed with Caddy's
// default: a logger at info level, which writes a line per refusal (here to
// io.Discard, JSON-encoded as Caddy would).
func BenchmarkRejectMalformedLogged(b *testing.B) {
	keys := benchKeys(b, 1, "")
	h := benchHandler(b, fileSourceJSON(b, keys), func(h *Handler) { h.FailedAuthLimit = "off" })
	h.logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	runServe(b, h, "DEV_API_thisisnotakeyatallnotakeyatallxyzw", http.StatusUnauthorized)
}

// BenchmarkRejectUnknown: a well-formed key that no record has.
func BenchmarkRejectUnknown(b *testing.B) {
	keys := benchKeys(b, 1, "")
	unknown, _ := keystore.Generate(keystore.Dev)
	h := benchHandler(b, fileSourceJSON(b, keys), func(h *Handler) { h.FailedAuthLimit = "off" })
	runServe(b, h, unknown, http.StatusUnauthorized)
}

// BenchmarkServeHTTPPostJSON is an admitted POST of a 1 KiB JSON body by a
// writer key, which may not use every method an override could ask for: the
// body's start is read for a "_method" before the request is passed on.
func BenchmarkServeHTTPPostJSON(b *testing.B) {
	benchPost(b, "", []byte(`{"model":"llama3","messages":[{"role":"user","content":"`+strings.Repeat("why is the sky blue? ", 48)+`"}]}`))
}

// BenchmarkServeHTTPPostGzipJSON is the same body compressed with gzip: it
// is decoded to be read.
func BenchmarkServeHTTPPostGzipJSON(b *testing.B) {
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write([]byte(`{"model":"llama3","messages":[{"role":"user","content":"` + strings.Repeat("why is the sky blue? ", 48) + `"}]}`))
	w.Close()
	benchPost(b, "gzip", z.Bytes())
}

func benchPost(b *testing.B, coding string, body []byte) {
	keys := benchKeys(b, 1, "")
	h := benchHandler(b, fileSourceJSON(b, keys), nil)
	req := benchRequest("/api/chat")
	req.Method = "POST"
	req.Header.Set("Content-Type", "application/json")
	if coding != "" {
		req.Header.Set("Content-Encoding", coding)
	}
	req.ContentLength = int64(len(body))
	w := newDiscard()
	auth := []string{"Bearer " + keys[0].Secret}
	rd := bytes.NewReader(nil)
	rc := io.NopCloser(rd)
	next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
		_, err := io.Copy(io.Discard, r.Body)
		return err
	})
	b.ReportAllocs()
	for b.Loop() {
		w.reset()
		rd.Reset(body)
		req.Body = rc
		req.Header["Authorization"] = auth
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
	if w.code != http.StatusOK {
		b.Fatalf("status %d", w.code)
	}
}
