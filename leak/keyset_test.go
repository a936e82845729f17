package leak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeySetFetchKeepsLastGood: the keys are fetched from the URL; a
// failed or unparsable fetch keeps the last good ones; a report naming an
// unknown identifier fetches again (at most once a minute).
func TestKeySetFetchKeepsLastGood(t *testing.T) {
	first, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	second, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var serve atomic.Value // []byte, or nil for a 500
	serve.Store(publicKeysDoc(t, "k1", &first.PublicKey))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		doc, _ := serve.Load().([]byte)
		if doc == nil {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Write(doc)
	}))
	defer srv.Close()
	ks, err := NewKeySet(nil, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ks.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	body := []byte(`[{"token":"x"}]`)
	if err := ks.Verify(ctx, "k1", sign(t, first, body), body); err != nil {
		t.Fatalf("a report signed with the fetched key: %v", err)
	}
	for name, doc := range map[string][]byte{"a failed fetch": nil, "a document that does not parse": []byte(`{"public_keys": []}`)} {
		serve.Store(doc)
		if err := ks.Refresh(ctx); err == nil {
			t.Errorf("%s: no error", name)
		}
		if err := ks.Verify(ctx, "k1", sign(t, first, body), body); err != nil {
			t.Errorf("after %s, the last good key is gone: %v", name, err)
		}
	}
	// The scanner rotates its keys: an unknown identifier fetches again,
	// once; the next unknown one within the minute does not.
	serve.Store(publicKeysDoc(t, "k2", &second.PublicKey))
	before := fetches.Load()
	ks.mu.Lock()
	ks.lastAttempt = ks.lastAttempt.Add(-2 * refetchUnknownEvery)
	ks.mu.Unlock()
	if err := ks.Verify(ctx, "k2", sign(t, second, body), body); err != nil {
		t.Fatalf("a report signed with the scanner's new key: %v", err)
	}
	if err := ks.Verify(ctx, "k3", sign(t, second, body), body); !errors.Is(err, ErrSignature) {
		t.Errorf("an unknown identifier: %v", err)
	}
	if n := fetches.Load() - before; n != 1 {
		t.Errorf("%d fetches for two unknown identifiers within a minute, want 1", n)
	}
}

func TestKeySetURLMustBeHTTPS(t *testing.T) {
	for _, u := range []string{"http://api.github.com/meta/public_keys/secret_scanning", "ftp://x/y", "not a url"} {
		if _, err := NewKeySet(nil, u); err == nil {
			t.Errorf("%s: accepted", u)
		}
	}
	for _, u := range []string{"https://api.github.com/meta/public_keys/secret_scanning", "http://127.0.0.1:8080/keys", "http://[::1]/k", "http://localhost/k"} {
		if _, err := NewKeySet(nil, u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if _, err := NewKeySet(nil, ""); err == nil {
		t.Error("a key set of nothing was accepted")
	}
}

// TestKeySetRefetchOutlivesItsRequest: a report that names an unknown
// identifier and goes away at once does not end the fetch it started (nor
// spend the minute's fetch on nothing): the scanner's new key arrives, and
// a genuine report signed with it, sent while the fetch runs, waits for it
// and is taken.
func TestKeySetRefetchOutlivesItsRequest(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	doc := publicKeysDoc(t, "new", &key.PublicKey)
	release := make(chan struct{})
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		<-release // a slow document server
		w.Write(doc)
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	ks, err := NewKeySet(nil, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`[{"token":"x"}]`)
	gone, cancel := context.WithCancel(context.Background())
	cancel() // an unsigned request that went away
	if err := ks.Verify(gone, "bogus", "AAAA", body); !errors.Is(err, ErrSignature) {
		t.Fatalf("a made-up identifier: %v", err)
	}
	verified := make(chan error, 1)
	go func() { verified <- ks.Verify(context.Background(), "new", sign(t, key, body), body) }()
	close(release)
	if err := <-verified; err != nil {
		t.Fatalf("a report signed with the scanner's new key, sent while the fetch ran: %v", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// TestReplaysAreBoundedInBytes: the answers remembered for replayed
// reports hold at most replayMaxBytes together, the oldest let go first.
func TestReplaysAreBoundedInBytes(t *testing.T) {
	var r replays
	now := time.Now()
	answer := make([]byte, 1<<20) // about the largest answer
	for i := range 100 {
		r.put([]byte{byte(i), byte(i >> 8)}, answer, now)
		if r.bytes > replayMaxBytes {
			t.Fatalf("after %d answers: %d bytes remembered, over %d", i+1, r.bytes, replayMaxBytes)
		}
	}
	if _, ok := r.get([]byte{0, 0}, now); ok {
		t.Error("the oldest answer is still remembered")
	}
	if _, ok := r.get([]byte{99, 0}, now); !ok {
		t.Error("the newest answer is forgotten")
	}
}
