package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// manyKeysPortal is a portal with approve_prod on a key file of n keys,
// every 1,000th waiting for approval.
func manyKeysPortal(tb testing.TB, n int) *Server {
	tb.Helper()
	recs := make([]keystore.Record, n)
	created := time.Now().UTC().Format(time.RFC3339)
	for i := range recs {
		key, err := keystore.Generate(keystore.Prod)
		if err != nil {
			tb.Fatal(err)
		}
		recs[i] = keystore.Record{ID: fmt.Sprintf("k_%07d", i), Hash: keystore.Sum(key).Encode(), Type: "prod", Role: "reader",
			Services: []string{"echo"}, Owner: fmt.Sprintf("dev%d", i%500), CreatedAt: created, Pending: i%1000 == 999}
	}
	data, _ := json.Marshal(map[string]any{"keys": recs})
	path := filepath.Join(tb.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	p := Policy{Admins: []string{"admin"}, ApproveProd: true, Services: []Service{{Name: "echo", Path: "/echo/hello"}}}
	if err := p.check(); err != nil {
		tb.Fatal(err)
	}
	s, err := New("/portal", p, Backend{Store: keyfile.NewStore(path)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkAdminPage is the admin page (every key's first page, and the
// keys waiting for approval) at 10,000 and 100,000 keys in a key file.
func BenchmarkAdminPage(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := manyKeysPortal(b, n)
			for _, page := range []string{"/portal/admin", "/portal/admin?q=many1999", "/portal/admin?type=prod"} {
				b.Run(strings.TrimPrefix(page, "/portal/admin"), func(b *testing.B) {
					// The first page reads the file; the others, while it is
					// unchanged, what the store kept of it.
					w := httptest.NewRecorder()
					s.ServeHTTP(w, httptest.NewRequest("GET", page, nil), "admin")
					b.ResetTimer()
					for range b.N {
						w := httptest.NewRecorder()
						s.ServeHTTP(w, httptest.NewRequest("GET", page, nil), "admin")
						if w.Code != http.StatusOK {
							b.Fatal(w.Code)
						}
					}
				})
			}
		})
	}
}

// BenchmarkWaitingKeys is the admin page's lookup of the keys waiting for
// approval, at 100,000 keys in a key file read before.
func BenchmarkWaitingKeys(b *testing.B) {
	s := manyKeysPortal(b, 100_000)
	q := keystore.ListQuery{Waiting: true, Limit: adminPageSize}
	if page, err := s.backend.Store.List(context.Background(), q); err != nil || len(page.Records) != 100 {
		b.Fatalf("%d waiting keys, %v; want 100", len(page.Records), err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := s.backend.Store.List(context.Background(), q); err != nil {
			b.Fatal(err)
		}
	}
}
