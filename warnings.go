package apikey

import (
	"reflect"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// warnAboutServer warns, once per server (or per config load for what is
// global), about settings of the server the handler runs in that undo what
// the handler guards: Caddy logs that write a header holding a key or the
// upstream's credential in full, and trusted proxies that let clients
// choose their address.
func (h *Handler) warnAboutServer(ctx caddy.Context) {
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return
	}
	once := func(srv *caddyhttp.Server, subject string) bool {
		// One per server and subject per config load, however many routes
		// share them: the config's app remembers.
		return h.app.Once(warningKey{srv, subject})
	}
	h.warnAboutLogs(ctx, srv, once)
	if (h.failures != nil || h.wide != nil) && trustsProxiesLoosely(srv) && once(srv, "trusted_proxies") {
		h.logger.Warn("trusted_proxies is set without trusted_proxies_strict: a client behind a proxy that appends " +
			"to X-Forwarded-For can choose the address that allowed_ips and the failed-authentication throttle see " +
			"(and get another address locked out); set trusted_proxies_strict")
	}
}

type warningKey struct {
	srv     *caddyhttp.Server
	subject string
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
