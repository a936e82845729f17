package apikey

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// BenchmarkServeHTTP measures the handler's own cost for an admitted request:
// read the key, check it, look it up, authorize, set the credential.
func BenchmarkServeHTTP(b *testing.B) {
	t := &testing.T{}
	key := newKey(t, keystore.Dev, keystore.Record{ID: "k_bench", Role: "writer", Services: []string{"ollama"}, QuotaPerDay: int64p(1 << 62)})
	dir := b.TempDir()
	path := dir + "/keys.json"
	data, _ := json.Marshal(map[string]any{"keys": []keystore.Record{key.record}})
	if err := writeFileBytes(path, data); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{
		KeysRaw:      json.RawMessage(`{"source": "file", "path": "` + path + `"}`),
		Service:      "ollama",
		UpstreamAuth: nil,
	}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	h.logger = zap.NewNop() // a production logger at info level, without the output
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
	req := httptest.NewRequest("GET", "/api/tags", nil)
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), nil, nil)
	w := httptest.NewRecorder()
	auth := []string{"Bearer " + key.secret}

	b.ReportAllocs()
	for b.Loop() {
		req.Header["Authorization"] = auth
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
	if w.Code != http.StatusOK {
		b.Fatalf("status %d", w.Code)
	}
}
