package portal

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// TestRoutes: each page answers its methods; another method is 405 with
// the methods the page takes in Allow, on a portal page with its security
// headers; an unknown path is 404.
func TestRoutes(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(keys, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New("/portal", testPolicy(t, Policy{Admins: []string{"admin"}}), Backend{Store: keyfile.NewStore(keys)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/portal", http.StatusSeeOther, ""},
		{"GET", "/portal/", http.StatusSeeOther, ""},
		{"GET", "/portal/keys", http.StatusOK, ""},
		{"HEAD", "/portal/keys", http.StatusOK, ""},
		{"GET", "/portal/keys/new", http.StatusOK, ""},
		{"GET", "/portal/keys/k_none", http.StatusNotFound, ""}, // the page's own answer: no such key
		{"GET", "/portal/usage", http.StatusOK, ""},
		{"GET", "/portal/playground", http.StatusOK, ""},
		{"GET", "/portal/admin", http.StatusOK, ""},
		{"PUT", "/portal/keys", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
		{"DELETE", "/portal/keys/k_x", http.StatusMethodNotAllowed, "GET, HEAD, POST"},
		{"GET", "/portal/keys/k_x/rotate", http.StatusMethodNotAllowed, "POST"},
		{"GET", "/portal/admin/keys/k_x/approve", http.StatusMethodNotAllowed, "POST"},
		{"PATCH", "/portal/usage", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"GET", "/portal/nowhere", http.StatusNotFound, ""},
		{"GET", "/portal/keys/k_x/extra", http.StatusNotFound, ""},
		{"PUT", "/portal/nowhere", http.StatusNotFound, ""},
		{"GET", "/portalx/keys", http.StatusNotFound, ""},
	} {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil), "admin")
		if w.Code != c.status || w.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s: %d, Allow %q; want %d, Allow %q", c.method, c.path, w.Code, w.Header().Get("Allow"), c.status, c.allow)
		}
		if w.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s %s: no Content-Security-Policy", c.method, c.path)
		}
		if w.Code >= 400 && !strings.Contains(w.Body.String(), `role="alert"`) && !strings.Contains(w.Body.String(), "<main") {
			t.Errorf("%s %s: %d is not a portal page: %.200s", c.method, c.path, w.Code, w.Body.String())
		}
	}
}
