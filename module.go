// Package apikey is a Caddy HTTP handler that admits requests carrying a
// valid API key, decides what the key may do, strips it, and hands the
// request on with the upstream service's own credential.
package apikey

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler authenticates requests by API key. A request without a valid key
// gets 401; a key that may not do what the request asks gets 403; both come
// with a JSON body. An admitted request loses the client's key, gains the
// upstream's credential (see upstream_auth) and goes on to the next handler,
// usually reverse_proxy.
//
// On success it sets {http.auth.user.id} to the key id, so Caddy's access log
// shows it as user_id, and the placeholders {http.apikey.id},
// {http.apikey.name}, {http.apikey.role}, {http.apikey.type} and
// {http.apikey.service}.
type Handler struct {
	// Keys is the key source, named by its "source" field, e.g.
	// {"source": "file", "path": "/etc/caddy/keys.json"}. Required.
	KeysRaw json.RawMessage `json:"keys,omitempty" caddy:"namespace=http.apikey.sources inline_key=source"`

	// KeyFrom lists the request headers the client key is read from, tried
	// in order. Default: "Authorization: Bearer <key>", then "X-API-Key".
	// The header the key came from is removed before the request goes on.
	KeyFrom []headers.KeyLocation `json:"key_from,omitempty"`

	// Service names what this route fronts, e.g. "ollama" or "n8n". A key
	// whose services lack it gets 403. Without it, services are not checked.
	Service string `json:"service,omitempty"`

	// AllowTypes limits the key types this route accepts: "dev", "prod".
	// Empty accepts both.
	AllowTypes []string `json:"allow_types,omitempty"`

	// UpstreamAuth sets the upstream's own credential on admitted requests,
	// replacing whatever the client sent in that header.
	UpstreamAuth *headers.Credential `json:"upstream_auth,omitempty"`

	source     keystore.Source
	keyFrom    []headers.KeyLocation
	allowTypes uint8 // bit per keystore.Type
	credential headers.Prepared
	// serviceValue is Service as an interface value, for the placeholder.
	serviceValue any
	denials      denials
	logger       *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the key source and prepares everything a request needs.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()

	if h.KeysRaw == nil {
		return errors.New("keys: a key source is required, e.g. keys file /etc/caddy/keys.json")
	}
	mod, err := ctx.LoadModule(h, "KeysRaw")
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	source, ok := mod.(keystore.Source)
	if !ok {
		return fmt.Errorf("keys: module %T is not a key source", mod)
	}
	h.source = source

	locs := h.KeyFrom
	if len(locs) == 0 {
		locs = headers.DefaultKeyLocations
	}
	h.keyFrom = make([]headers.KeyLocation, len(locs))
	for i, loc := range locs {
		if h.keyFrom[i], err = loc.Canonical(); err != nil {
			return fmt.Errorf("key_from[%d]: %w", i, err)
		}
	}

	allowed := h.AllowTypes
	if len(allowed) == 0 {
		allowed = []string{keystore.Dev.String(), keystore.Prod.String()}
	}
	for _, name := range allowed {
		t, err := keystore.ParseType(name)
		if err != nil {
			return fmt.Errorf("allow_types: %w", err)
		}
		h.allowTypes |= 1 << t
	}

	if h.UpstreamAuth != nil {
		if h.credential, err = h.UpstreamAuth.Prepare(); err != nil {
			return err
		}
	}

	h.serviceValue = h.Service
	h.denials = newDenials(h.Service, allowed, locs)
	return nil
}

// ServeHTTP admits or refuses the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	key, found := headers.TakeKey(r.Header, h.keyFrom)
	if !found {
		return h.deny(w, r, h.denials.missing, nil)
	}
	presented, ok := keystore.Check(key)
	if !ok {
		return h.deny(w, r, h.denials.invalid, nil)
	}
	match, err := h.source.Lookup(r.Context(), keystore.Sum(key))
	if err != nil {
		h.logger.Error("key source failed", zap.Error(err))
		return h.deny(w, r, h.denials.unavailable, nil)
	}
	k := match.Key
	if k == nil || (k.Type != 0 && k.Type != presented) {
		return h.deny(w, r, h.denials.invalid, nil)
	}

	now := time.Now()
	switch {
	case k.Revoked:
		return h.deny(w, r, h.denials.revoked, k)
	case k.Expired(now):
		return h.deny(w, r, h.denials.expired, k)
	case match.Previous != nil && !now.Before(match.Previous.ValidUntil):
		return h.deny(w, r, h.denials.rotatedOut, k)
	case h.allowTypes&(1<<presented) == 0:
		return h.deny(w, r, h.denials.keyType, k)
	case k.RestrictsIP() && !k.AllowsIP(clientIP(r)):
		return h.deny(w, r, h.denials.ip, k)
	case h.Service != "" && !k.AllowsService(h.Service):
		return h.deny(w, r, h.denials.service, k)
	case !k.Permits(r):
		return h.deny(w, r, h.denials.method, k)
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", k.IDValue)
	repl.Set("http.apikey.id", k.IDValue)
	repl.Set("http.apikey.name", k.NameValue)
	repl.Set("http.apikey.role", roleValues[k.Role])
	repl.Set("http.apikey.type", typeValues[presented])
	repl.Set("http.apikey.service", h.serviceValue)
	h.credential.Apply(r.Header, repl) // after the placeholders, which it may use

	if match.Previous != nil {
		// RFC 8594: tell the client this secret is on its way out, and when.
		w.Header().Set("Deprecation", "true")
		w.Header().Set("Sunset", match.Previous.ValidUntil.UTC().Format(http.TimeFormat))
	}
	if c := h.logger.Check(zapcore.DebugLevel, "request allowed"); c != nil {
		c.Write(zap.String("key_id", k.ID), zap.String("method", r.Method), zap.String("path", r.URL.Path))
	}
	return next.ServeHTTP(w, r)
}

// Placeholder values for roles and types, boxed once.
var (
	roleValues = [...]any{keystore.Reader: "reader", keystore.Writer: "writer", keystore.Admin: "admin", keystore.Custom: "custom"}
	typeValues = [...]any{keystore.Dev: "dev", keystore.Prod: "prod"}
)

// deny answers the request with d and logs the refusal: never the key or its
// hash, only the key id when the key is known.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, d *denial, k *keystore.Key) error {
	if c := h.logger.Check(zapcore.InfoLevel, "request denied"); c != nil {
		fields := []zap.Field{
			zap.String("decision", d.code),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.Stringer("client_ip", clientIP(r)),
		}
		if d.reason != "" {
			fields = append(fields, zap.String("reason", d.reason))
		}
		if k != nil {
			fields = append(fields, zap.String("key_id", k.ID))
		}
		c.Write(fields...)
	}
	d.write(w)
	return nil
}

// clientIP is Caddy's idea of the client address, which honours the
// server's trusted_proxies.
func clientIP(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return addr.WithZone("")
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
