package keyservice

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
)

// answerTransport answers every call with 200 and the body it holds: the
// fuzz target reaches the answer's decoding without a network.
type answerTransport struct{ body []byte }

func (a *answerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)), Request: req}, nil
}

// FuzzKeyServiceAnswer decodes arbitrary 200 answers of a key service. An
// answer is accepted only when it is one record the key file would accept,
// and the match it gives answers to the hash asked about: the record's own
// hash (no previous secret) or the previous hash that was asked. A 200 never
// reads as "unknown key", and an error never repeats the hash.
func FuzzKeyServiceAnswer(f *testing.F) {
	h := func(b string) string { return "sha256:" + strings.Repeat(b, 32) }
	for _, s := range []string{
		`{"id": "k_a", "hash": "` + h("ab") + `", "role": "reader"}`,
		`{"id": "k_a", "name": "A", "hash": "` + h("ab") + `", "type": "dev", "role": "custom", "services": ["ollama"],
		  "permissions": ["GET /api/*"], "allowed_ips": ["10.0.0.0/8"], "expires_at": "2030-01-01T00:00:00Z",
		  "quota_per_day": 10, "rate": "5/s", "revoked": true,
		  "previous_hashes": [{"hash": "` + h("cd") + `", "valid_until": "2030-01-01T00:00:00Z"}]}`,
		`{"id": "k_a", "hash": "` + h("ab") + `", "role": "reader",
		  "previous_hashes": [{"hash": "` + h("cd") + `", "valid_until": "2030-01-01T00:00:00Z"},
		                      {"hash": "` + h("cd") + `", "valid_until": "2031-01-01T00:00:00Z"}]}`,
		`{"id": "k_a", "hash": "` + h("ab") + `", "role": "reader"} {"id": "k_b"}`,
		`{"id": "k_a", "hash": "` + h("ab") + `", "role": "reader", "extra": 1}`,
		`{"keys": [{"id": "k_a", "hash": "` + h("ab") + `", "role": "reader"}]}`,
		`{"id": "k_a", "hash": "` + h("AB") + `", "role": "reader"}`,
		`null`, `{}`, ``, `[]`, `"x"`,
	} {
		for ask := range uint8(3) {
			f.Add([]byte(s), ask)
		}
	}

	svc, err := newKeyService("http://keys.invalid/lookup", nil, time.Second, keycache.CacheConfig{MaxKeys: 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { svc.Destruct() })
	transport := &answerTransport{}
	svc.client.Transport = transport
	other := keystore.Sum("DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl")

	f.Fuzz(func(t *testing.T, body []byte, ask uint8) {
		// The hash asked about: the record's own (ask 0), one of its
		// previous ones (ask 1..), or one it does not hold.
		var loose keystore.Record
		json.Unmarshal(body, &loose)
		d := other
		if ask == 0 {
			if got, err := keystore.ParseDigest(loose.Hash); err == nil {
				d = got
			}
		} else if n := len(loose.PreviousHashes); n > 0 {
			if got, err := keystore.ParseDigest(loose.PreviousHashes[int(ask-1)%n].Hash); err == nil {
				d = got
			}
		}

		transport.body = body
		m, err := svc.fetch(context.Background(), d)
		if err != nil {
			if m.Key != nil {
				t.Fatal("a key came back with the error")
			}
			if hashesOnlyInHashFields(string(body)) && strings.Contains(err.Error(), hex.EncodeToString(d[:])) {
				t.Fatalf("the error repeats the hash: %v", err)
			}
			return
		}
		if m.Key == nil {
			t.Fatal("a 200 answer read as an unknown key")
		}
		k := m.Key
		if m.Previous == nil {
			if !k.Digest.Equal(d) {
				t.Fatalf("key %q was accepted, and its hash is not the one asked about", k.ID)
			}
		} else {
			if !m.Previous.Digest.Equal(d) || k.Digest.Equal(d) {
				t.Fatalf("key %q was accepted as an old secret of another hash", k.ID)
			}
			held := false
			for i := range k.Previous {
				held = held || &k.Previous[i] == m.Previous
			}
			if !held {
				t.Fatalf("key %q: the matched previous hash is not one of its own", k.ID)
			}
		}

		// What the service may answer is what a key file may hold.
		set, err := keystore.ParseAndValidate(append(append([]byte(`{"keys": [`), body...), "]}"...))
		if err != nil {
			t.Fatalf("key %q was accepted from the service, and a key file would refuse it: %v", k.ID, err)
		}
		if got := set.Lookup(d); got.Key == nil || got.Key.ID != k.ID || (got.Previous == nil) != (m.Previous == nil) {
			t.Fatalf("key %q: the service's answer and the key file disagree on the hash asked about", k.ID)
		}
	})
}
