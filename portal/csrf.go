package portal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// The form token every form sends back is kept in a cookie: a page from
// another site can make the browser send the cookie, but cannot read it to
// put it in the form (double submit). Origin and Sec-Fetch-Site, which
// browsers set on every POST, are checked as well.
//
// The token is bound to the visitor: it is a random nonce and an HMAC of
// the nonce and the visitor's identity, under a key this process keeps. A
// cookie the portal did not make for this visitor (one set by a page on
// another port of the same host, which cookies do not tell apart, or
// another visitor's token) is not adopted: a new token replaces it. On
// HTTPS the cookie has the __Host- prefix, which browsers accept only
// from a secure page, for the whole host (Path=/) and no other domain.
const (
	csrfCookie       = "apikey_portal_csrf"
	csrfCookieSecure = "__Host-" + csrfCookie
	csrfField        = "csrf"
)

// sessionKey signs the form tokens of this process: every portal in it,
// across config reloads, takes the tokens of the others.
var sessionKey = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}()

// cookieName is the form token's cookie on r's scheme.
func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return csrfCookieSecure
	}
	return csrfCookie
}

// tokenMAC binds a nonce to a visitor.
func tokenMAC(user, nonce string) string {
	m := hmac.New(sha256.New, sessionKey)
	m.Write([]byte("apikey portal form token\x00" + user + "\x00" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validToken reports whether token is one this process made for user.
func validToken(token, user string) bool {
	nonce, mac, ok := strings.Cut(token, ".")
	return ok && len(nonce) == 22 && hmac.Equal([]byte(mac), []byte(tokenMAC(user, nonce)))
}

// csrfToken returns the visitor's token, setting a new one when the
// request has none made for them.
func csrfToken(w http.ResponseWriter, r *http.Request, base, user string) string {
	name := cookieName(r)
	if c, err := r.Cookie(name); err == nil && validToken(c.Value, user) {
		return c.Value
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := base64.RawURLEncoding.EncodeToString(b[:])
	token := nonce + "." + tokenMAC(user, nonce)
	path := base
	if path == "" || r.TLS != nil {
		path = "/" // __Host- cookies are for the whole host
	}
	// Lax, not Strict: a link from another site (or the identity
	// provider's redirect back) must not arrive without the cookie, or a
	// new token would replace it and break the forms open in other tabs.
	// The token and the origin check protect the changes, not SameSite.
	http.SetCookie(w, &http.Cookie{Name: name, Value: token, Path: path, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	// The token just made is what this answer's forms carry; the request
	// that got it had none, so a POST fails below.
	r.Header.Del("Cookie")
	return token
}

// checkPost refuses a POST that did not come from one of the portal's own
// forms.
func checkPost(r *http.Request, user string) error {
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
	c, err := r.Cookie(cookieName(r))
	if err != nil || !validToken(c.Value, user) {
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
