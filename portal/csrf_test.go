package portal

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestFormTokenCookie: on HTTPS the form token's cookie is a __Host-
// cookie (Secure, Path=/, no Domain); on HTTP it is scoped to the portal's
// path. A token is taken back only from the visitor it was made for.
func TestFormTokenCookie(t *testing.T) {
	for _, tc := range []struct {
		tls        bool
		name, path string
	}{{true, "__Host-apikey_portal_csrf", "/"}, {false, "apikey_portal_csrf", "/portal"}} {
		r := httptest.NewRequest("GET", "/portal/keys", nil)
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		w := httptest.NewRecorder()
		token := csrfToken(w, r, "/portal", "alice")
		cookies := (&http.Response{Header: w.Header()}).Cookies()
		if len(cookies) != 1 {
			t.Fatalf("tls %v: %d cookies set, want 1", tc.tls, len(cookies))
		}
		c := cookies[0]
		if c.Name != tc.name || c.Path != tc.path || c.Domain != "" || c.Secure != tc.tls || !c.HttpOnly || c.Value != token {
			t.Errorf("tls %v: cookie %s path %s domain %q secure %v httponly %v, want %s path %s secure %v httponly, holding the form's token",
				tc.tls, c.Name, c.Path, c.Domain, c.Secure, c.HttpOnly, tc.name, tc.path, tc.tls)
		}
		// The same cookie comes back: kept for alice, replaced for bob.
		for user, kept := range map[string]bool{"alice": true, "bob": false} {
			again := httptest.NewRequest("GET", "/portal/keys", nil)
			again.TLS = r.TLS
			again.AddCookie(&http.Cookie{Name: tc.name, Value: token})
			w := httptest.NewRecorder()
			if got := csrfToken(w, again, "/portal", user); (got == token) != kept {
				t.Errorf("tls %v: alice's token sent by %s kept: %v, want %v", tc.tls, user, got == token, kept)
			}
		}
	}
	// A well-formed token this process did not sign is not adopted.
	r := httptest.NewRequest("GET", "/portal/keys", nil)
	forged := "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: forged})
	if got := csrfToken(httptest.NewRecorder(), r, "/portal", "alice"); got == forged {
		t.Error("a token the portal did not make was adopted")
	}
}
