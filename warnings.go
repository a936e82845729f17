package apikey

import (
	"reflect"
	"sync"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// redactedByCaddy are the request headers Caddy's logs redact (unless the
// server sets log_credentials).
var redactedByCaddy = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true}

// warned dedupes provision warnings: one per server and subject per config
// load, however many routes share them.
var warned sync.Map

// warnAboutServer warns, once per server, about settings of the server the
// handler runs in that undo what the handler guards: access logs that write
// a key header in full, and trusted proxies that let clients choose their
// address.
func (h *Handler) warnAboutServer(ctx caddy.Context) {
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return
	}
	once := func(subject string) bool {
		_, dup := warned.LoadOrStore(warningKey{srv, subject}, struct{}{})
		return !dup
	}
	if srv.Logs != nil {
		for _, loc := range h.keyFrom {
			if (!redactedByCaddy[loc.Header] || srv.Logs.ShouldLogCredentials) && once("log:"+loc.Header) {
				h.logger.Warn("this server's access log writes request headers in full, and clients send keys in "+loc.Header+
					"; delete the header in the log's format filter, e.g. log { format filter { request>headers>"+
					loc.Header+" delete } } (and the same in the global log for Caddy's debug lines)",
					zap.String("header", loc.Header))
			}
		}
	}
	if (h.failures != nil || h.wide != nil) && trustsProxiesLoosely(srv) && once("trusted_proxies") {
		h.logger.Warn("trusted_proxies is set without trusted_proxies_strict: a client behind a proxy that appends " +
			"to X-Forwarded-For can choose the address that allowed_ips and the failed-authentication throttle see " +
			"(and get another address locked out); set trusted_proxies_strict")
	}
}

type warningKey struct {
	srv     *caddyhttp.Server
	subject string
}

// forgetServerWarnings lets the next config load warn again, and lets go of the
// servers; called when a handler is cleaned up (after the next config, if
// any, was provisioned).
func forgetServerWarnings() {
	warned.Range(func(k, _ any) bool {
		warned.Delete(k)
		return true
	})
}

// trustsProxiesLoosely reports a server with trusted_proxies and without
// trusted_proxies_strict. Caddy keeps the loaded trusted proxies in an
// unexported field (the raw config is gone by the time handlers are
// provisioned), so it is read by reflection, once per config load; if a
// future Caddy renames it, the warning is skipped.
func trustsProxiesLoosely(srv *caddyhttp.Server) bool {
	if srv.TrustedProxiesStrict > 0 {
		return false
	}
	f := reflect.ValueOf(srv).Elem().FieldByName("trustedProxies")
	if !f.IsValid() || (f.Kind() != reflect.Interface && f.Kind() != reflect.Pointer) {
		return len(srv.TrustedProxiesRaw) > 0
	}
	return !f.IsNil()
}
