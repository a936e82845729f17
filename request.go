package apikey

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/usage"
)

// isPreflight reports a CORS preflight: an OPTIONS request (checked by the
// caller) with Origin and Access-Control-Request-Method.
func isPreflight(h http.Header) bool {
	return len(h["Origin"]) > 0 && len(h["Access-Control-Request-Method"]) > 0
}

// methodOverrideHeaders are the headers frameworks (Express's
// method-override, Rails, Laravel, ASP.NET, Google's APIs) read to run a
// request as another method.
var methodOverrideHeaders = [...]string{"X-Http-Method-Override", "X-Method-Override", "X-Http-Method"}

// maxOverridePeek is how much of a form body is read for a "_method"
// field: Rails and Laravel read it there.
const maxOverridePeek = 64 << 10

// anyOverride stands for an override whose method could not be read: it is
// allowed only to a key that may use every method it could be.
var anyOverride = []string{http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodPost}

// permitsOverride checks every method the request asks to be run as
// against the key's role and permissions, since the upstream may honour
// any of them: the override headers, a "_method" query parameter (however
// its name is escaped, with "&" or ";" between pairs), and a "_method"
// field in a form body's first 64 KiB.
func permitsOverride(k *keystore.Key, r *http.Request) bool {
	permits := func(m string) bool {
		return k.PermitsMethod(r, strings.ToUpper(strings.TrimSpace(m)))
	}
	for _, name := range methodOverrideHeaders {
		for _, m := range r.Header[name] {
			if !permits(m) {
				return false
			}
		}
	}
	if q := r.URL.RawQuery; q != "" && (containsFold(q, "method") || strings.Contains(q, "%")) {
		for _, m := range formValues(q, "_method") {
			if !permits(m) {
				return false
			}
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	// The media type as frameworks read it: cut at ";" or ",", whatever
	// follows (Rack and PHP accept what mime.ParseMediaType refuses).
	mediaType := r.Header.Get("Content-Type")
	if i := strings.IndexAny(mediaType, ";,"); i >= 0 {
		mediaType = mediaType[:i]
	}
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	multipart := mediaType == "multipart/form-data"
	if mediaType != "application/x-www-form-urlencoded" && !multipart {
		return true
	}
	mayOverride := true
	for _, m := range anyOverride {
		mayOverride = mayOverride && permits(m)
	}
	if mayOverride {
		return true // whatever the body asks, the key may do it
	}
	head := peekBody(r, maxOverridePeek)
	if !containsFold(string(head), "method") && !bytes.Contains(head, []byte("%")) {
		return true
	}
	methods := formValues(string(head), "_method")
	if multipart && containsFold(string(head), "_method") {
		// Field names in multipart may be quoted or not, in any case.
		methods = anyOverride
	}
	for _, m := range methods {
		if !permits(m) {
			return false
		}
	}
	return true
}

// errOverrideInBody aborts a request whose form body, past the part read
// before the request was admitted, asks for another method.
var errOverrideInBody = errors.New(`a "_method" field past the first 64 KiB of a form body`)

// overrideGuard reads the rest of a form body (past the part read before
// the request was admitted) and fails the request if it holds "_method":
// the upstream then gets a cut body, which no framework acts on, and the
// client a 502.
type overrideGuard struct {
	io.Reader
	tail []byte // the last bytes read, for a match across reads
}

func (g *overrideGuard) Read(p []byte) (int, error) {
	n, err := g.Reader.Read(p)
	if n > 0 {
		window := append(g.tail, p[:n]...)
		if containsFold(string(window), "_method") {
			return 0, errOverrideInBody
		}
		keep := min(len(window), len("_method")-1)
		g.tail = append(g.tail[:0], window[len(window)-keep:]...)
	}
	return n, err
}

// peekBody reads up to n bytes of a form body and puts them back in front
// of the rest, so the upstream gets the body whole; the rest, if any, is
// read through an overrideGuard.
func peekBody(r *http.Request, n int) []byte {
	buf := make([]byte, n)
	got, err := io.ReadFull(r.Body, buf)
	buf = buf[:got]
	var rest io.Reader = r.Body
	if err == nil { // a full buffer: the body may go on
		rest = &overrideGuard{Reader: r.Body}
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), rest), r.Body}
	return buf
}

// formValues returns the values of name in s, a query or a form body: pairs
// split on "&" and ";", names and values unescaped leniently.
func formValues(s, name string) []string {
	var out []string
	for len(s) > 0 {
		var pair string
		if i := strings.IndexAny(s, "&;"); i >= 0 {
			pair, s = s[:i], s[i+1:]
		} else {
			pair, s = s, ""
		}
		k, v, _ := strings.Cut(pair, "=")
		if lenientUnescape(k) == name {
			out = append(out, lenientUnescape(v))
		}
	}
	return out
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
