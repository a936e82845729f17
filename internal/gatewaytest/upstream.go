package gatewaytest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Seen is a request an Upstream received.
type Seen struct {
	Method string
	Path   string
	Header http.Header
}

// Upstream is a real HTTP server that answers "upstream ok" and records
// every request it gets.
type Upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []Seen
}

// NewUpstream starts an Upstream until the test ends.
func NewUpstream(t testing.TB) *Upstream {
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, Seen{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()})
		u.mu.Unlock()
		io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(u.Close)
	return u
}

// Addr is the upstream's host:port, for reverse_proxy.
func (u *Upstream) Addr() string { return strings.TrimPrefix(u.URL, "http://") }

// Count is how many requests the upstream received.
func (u *Upstream) Count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// Last is the last request the upstream received; the test fails when
// there was none.
func (u *Upstream) Last(t testing.TB) Seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return u.seen[len(u.seen)-1]
}
