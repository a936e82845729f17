// Package admin is the admin API of the apikey gateway, the Caddy module
// admin.api.apikey: it serves /apikey/ on Caddy's admin endpoint, acting
// on the routes of the running config (their key stores, counters, usage
// counts, caches and audit logs) through the apikey app.
//
//	GET    /apikey/keys                  the keys (never their hashes), status and today's quota use
//	GET    /apikey/usage?key=&service=&from=&to=&by=hour|day
//	POST   /apikey/keys/<id>/revoke      revokes a key in its key file
//	POST   /apikey/cache/purge[?id=]     drops cached key-service answers
//	DELETE /apikey/quota/<id>            resets a key's counters
//	GET    /apikey/audit/head            the head of each audit log, to record elsewhere
package admin

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/app"
)

func init() {
	caddy.RegisterModule(API{})
}

// API serves /apikey/ on Caddy's admin endpoint (see the package's doc).
type API struct{}

// CaddyModule returns the Caddy module information.
func (API) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.apikey",
		New: func() caddy.Module { return new(API) },
	}
}

// Routes returns the admin routes.
func (API) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/apikey/", Handler: caddy.AdminHandlerFunc(serve)}}
}

// endpoint answers one method and path, for the running config's app (nil
// when it has none).
type endpoint func(w http.ResponseWriter, r *http.Request, running *app.App) error

// exchange is what serve hands an endpoint through the mux, and what it
// gets back.
type exchange struct {
	running *app.App
	err     error
}

type exchangeKey struct{}

// ServeHTTP runs the endpoint, leaving its error for serve.
func (e endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := r.Context().Value(exchangeKey{}).(*exchange)
	x.err = e(w, r, x.running)
}

// route is one endpoint: docs/admin-api.md has a row for each.
type route struct {
	method, path string
	serve        endpoint
}

// routes are the admin API's endpoints.
func routes() []route {
	return []route{
		{http.MethodGet, "/apikey/audit/head", auditHeads},
		{http.MethodGet, "/apikey/keys", keys},
		{http.MethodGet, "/apikey/usage", usageReport},
		{http.MethodPost, "/apikey/keys/{id}/revoke", revoke},
		{http.MethodPost, "/apikey/cache/purge", purge},
		{http.MethodDelete, "/apikey/quota/{id}", resetQuota},
	}
}

// mux routes by method and path. Every path it knows also has a pattern
// without a method, which refuses the other methods with 405 naming the
// one it takes, and "/apikey/" answers 404 for the rest: the answers are
// the admin API's JSON errors, never the mux's plain text.
var mux = sync.OnceValue(func() *http.ServeMux {
	m := http.NewServeMux()
	for _, route := range routes() {
		m.Handle(route.method+" "+route.path, route.serve)
		if route.method == http.MethodGet {
			// A GET pattern takes HEAD too; HEAD is not GET here.
			m.Handle(http.MethodHead+" "+route.path, needs(http.MethodGet))
		}
		m.Handle(route.path, needs(route.method))
	}
	m.Handle("/apikey/", endpoint(func(_ http.ResponseWriter, r *http.Request, _ *app.App) error {
		return apiError(http.StatusNotFound, "no apikey admin endpoint %s", r.URL.Path)
	}))
	return m
})

// needs refuses a request with the wrong method.
func needs(method string) endpoint {
	return func(w http.ResponseWriter, r *http.Request, _ *app.App) error {
		w.Header().Set("Allow", method)
		return apiError(http.StatusMethodNotAllowed, "%s needs %s, not %s", r.URL.Path, method, r.Method)
	}
}

// serve checks what the request names (see checkRequest), then routes it.
func serve(w http.ResponseWriter, r *http.Request) error {
	if err := checkRequest(r); err != nil {
		return err
	}
	// One slash at the end is no step of the path: /apikey/keys/ is
	// /apikey/keys.
	if r.URL.Path != "/apikey/" && strings.HasSuffix(r.URL.Path, "/") {
		u := *r.URL
		u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.RawPath, "/")
		r = r.Clone(r.Context())
		r.URL = &u
	}
	x := &exchange{running: app.Running()}
	mux().ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
	return x.err
}

// Interface guard
var _ caddy.AdminRouter = (*API)(nil)
