package apikey

import (
	"net/http"
	"net/url"
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

// permitsOverride checks every method the request asks to be run as (the
// override headers and a "_method" query parameter) against the key's role
// and permissions, since the upstream may honour any of them.
func permitsOverride(k *keystore.Key, r *http.Request) bool {
	for _, name := range methodOverrideHeaders {
		for _, m := range r.Header[name] {
			if !k.PermitsMethod(r, strings.ToUpper(strings.TrimSpace(m))) {
				return false
			}
		}
	}
	if strings.Contains(r.URL.RawQuery, "_method") {
		q, _ := url.ParseQuery(r.URL.RawQuery)
		for _, m := range q["_method"] {
			if !k.PermitsMethod(r, strings.ToUpper(strings.TrimSpace(m))) {
				return false
			}
		}
	}
	return true
}

// loggedMethod is the method as logs, audit entries and usage counts show
// it: a standard method, or "OTHER", so a made-up method cannot grow them.
func loggedMethod(m string) string { return usage.Method(m) }
