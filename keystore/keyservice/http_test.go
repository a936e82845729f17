package keyservice

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestHTTPSourceRedirectIsAFailure: a redirect must not be followed into a
// 404 that reads as "unknown key", nor carry the headers elsewhere.
func TestHTTPSourceRedirectIsAFailure(t *testing.T) {
	var leaked bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = r.Header.Get("X-Token") != ""
		http.NotFound(w, r)
	}))
	defer elsewhere.Close()
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusMovedPermanently)
	}))
	defer svc.Close()

	s := &HTTPSource{URL: svc.URL, Headers: http.Header{"X-Token": {"secret"}}}
	if err := s.Provision(caddyContext()); err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup()
	k, _ := keystore.Generate(keystore.Dev)
	m, err := s.Lookup(context.Background(), keystore.Sum(k))
	if !errors.Is(err, keystore.ErrUnavailable) || m.Key != nil {
		t.Fatalf("a redirect gave %+v, %v; want ErrUnavailable", m, err)
	}
	if leaked {
		t.Error("the headers followed the redirect")
	}
}

func TestHTTPSourceConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	s := &HTTPSource{URL: url, Timeout: 0}
	if err := s.Provision(caddyContext()); err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup()
	k, _ := keystore.Generate(keystore.Dev)
	start := time.Now()
	if _, err := s.Lookup(context.Background(), keystore.Sum(k)); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("connection refused: %v", err)
	}
	if time.Since(start) > DefaultHTTPTimeout+time.Second {
		t.Error("a refused connection waited past the timeout")
	}
}

func TestSafeURL(t *testing.T) {
	if got := safeURL("https://user:pass@keys.example/lookup?token=abc"); got != "https://keys.example/lookup" {
		t.Errorf("safeURL kept secrets: %q", got)
	}
}
