package apikey

import (
	"net/http"
	"path"
	"strings"

	"github.com/moodmnky/caddy-apikey/usage"
)

// isPreflight reports a CORS preflight: an OPTIONS request (checked by the
// caller) with Origin and Access-Control-Request-Method.
func isPreflight(h http.Header) bool {
	return len(h["Origin"]) > 0 && len(h["Access-Control-Request-Method"]) > 0
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// canonicalPath reports whether the path the upstream gets is the path the
// key's permissions are checked against: no dot segments, no encoded
// slashes, backslashes or dots. Otherwise an upstream that routes on the
// raw path could run a request the permission check saw elsewhere.
func canonicalPath(r *http.Request) bool {
	p := r.URL.Path
	// A backslash (which Go leaves unescaped in RawPath when %5C is its
	// usual escape) and path parameters on a dot segment ("..;", which
	// Tomcat and Jetty take as "..") mean another path upstream.
	if strings.ContainsRune(p, '\\') || strings.Contains(p, "..;") || strings.Contains(p, ".;") {
		return false
	}
	if p != "" && p != "/" {
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") {
			clean += "/"
		}
		if clean != p {
			return false
		}
	}
	raw := r.URL.RawPath
	return raw == "" || !(containsFold(raw, "%2f") || containsFold(raw, "%5c") || containsFold(raw, "%2e"))
}

// loggedMethod is the method as logs, audit entries and usage counts show
// it: a standard method, or "OTHER", so a made-up method cannot grow them.
func loggedMethod(m string) string { return usage.Method(m) }

// stripPreflight leaves a passed-on preflight nothing to act with: no
// key, credential, cookie, method override, body or trailer. Browsers
// send none of these with a preflight; a client that does is not a browser.
func (h *Handler) stripPreflight(r *http.Request) {
	for _, loc := range h.keyFrom {
		delete(r.Header, loc.Header)
	}
	for _, name := range methodOverrideHeaders {
		delete(r.Header, name)
	}
	for _, name := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Trailer"} {
		delete(r.Header, name)
	}
	if name := h.credential.Header(); name != "" {
		delete(r.Header, name)
	}
	r.Body, r.ContentLength, r.Trailer = http.NoBody, 0, nil
	// The query too: it may ask for another method ("_method"), and a
	// preflight is about the request that follows it, not its query.
	r.URL.RawQuery, r.RequestURI = "", r.URL.Path
	r.TransferEncoding = nil
	r.Header.Del("Content-Length")
}
