package portal

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// csrfCookie holds the token every form sends back: a page from another
// site can make the browser send the cookie, but cannot read it to put it
// in the form (double submit). Origin and Sec-Fetch-Site, which browsers
// set on every POST, are checked as well.
const (
	csrfCookie = "apikey_portal_csrf"
	csrfField  = "csrf"
)

// csrfToken returns the visitor's token, setting a new one when the
// request has none.
func csrfToken(w http.ResponseWriter, r *http.Request, base string) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	token := base64.RawURLEncoding.EncodeToString(b[:])
	path := base
	if path == "" {
		path = "/"
	}
	// Lax, not Strict: a link from another site (or the identity
	// provider's redirect back) must not arrive without the cookie, or a
	// new token would replace it and break the forms open in other tabs.
	// The token and the origin check protect the changes, not SameSite.
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: token, Path: path, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	// The token just made is what this answer's forms carry; the request
	// that got it had none, so a POST fails below.
	r.Header.Del("Cookie")
	return token
}

// checkPost refuses a POST that did not come from one of the portal's own
// forms.
func checkPost(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return sentence("This change came from another site, so it was refused. Make it from the portal's own pages.")
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, r.Host) {
			return sentence("This change came from another site, so it was refused. Make it from the portal's own pages.")
		}
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil {
		return sentence("Your session's form token is missing (cookies may be blocked). Reload the page and try again.")
	}
	if err := r.ParseMultipartForm(1 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return sentence("The form could not be read (it may be too large).")
	}
	if err := r.ParseForm(); err != nil {
		return sentence("The form could not be read (it may be too large).")
	}
	sent := r.PostFormValue(csrfField)
	if subtle.ConstantTimeCompare([]byte(sent), []byte(c.Value)) != 1 {
		return sentence("The form's token does not match your session (the page may be old). Reload the page and try again.")
	}
	return nil
}

// sentence is an error written for the visitor, shown on the page as it
// is: a whole sentence, capitalised and ending with a full stop.
type sentence string

func (s sentence) Error() string { return string(s) }
