package apikey

import (
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/usage"
)

// exchange is one request on its way through the handler: what ServeHTTP
// learns of it, step by step, passed on as one value.
type exchange struct {
	w   http.ResponseWriter
	r   *http.Request
	now time.Time
	// client is Caddy's idea of the client address (it honours the
	// server's trusted_proxies), read once.
	client netip.Addr

	// presented is the type of the key sent, once it is well formed.
	presented keystore.Type
	// key is the key's record, once found; match tells whether an old
	// secret of it was sent.
	key   *keystore.Key
	match keystore.Match
	// policy is the key's request limits, once it is authenticated.
	policy ratelimit.Policy
	// peek is the start of the body the override check holds.
	peek bodyHold
	// call is the request's token reservation, on a route with tokens.
	call *llmCall
	// res is what the request spent of the key's request limits.
	res ratelimit.Result

	// For the key's activity (serve_activity.go): the answer's status, the
	// refusal's reason, the tokens the answer used.
	status int
	reason string
	tokens int64
}

// ServeHTTP admits or refuses the request: authenticate the key,
// authorize what it asks, reserve its tokens (on a route with tokens),
// spend from its limits, and admit it; every refusal on the way is a
// value that refuse answers. A reservation is settled exactly once,
// however the request ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	x := exchange{w: w, r: r, now: time.Now(), client: clientIP(r)}
	defer h.recordActivity(&x)
	if f := h.throttle(&x); f.refused() {
		return h.refuse(&x, f)
	}
	if h.preflight && r.Method == http.MethodOptions && isPreflight(r.Header) {
		// Browsers send preflights without credentials: pass them on
		// uncounted, with nothing to act with.
		h.stripPreflight(r)
		return next.ServeHTTP(w, r)
	}
	if f := h.authenticate(&x); f.refused() {
		return h.refuse(&x, f)
	}
	// The start of a body the override check reads is held until the
	// request ends, and counted in max_inflight_body meanwhile.
	defer x.peek.release()
	if f := h.authorize(&x); f.refused() {
		return h.refuse(&x, f)
	}
	if h.tokens != nil {
		// From here the reservation is settled exactly once, however the
		// request ends: refused (released before the answer), answered,
		// or cut.
		defer h.settle(&x)
		if f := h.reserve(&x); f.refused() {
			return h.refuse(&x, f)
		}
	}
	if f := h.spend(&x); f.refused() {
		return h.refuse(&x, f)
	}
	h.admit(&x)
	if x.call != nil {
		return h.proxyLLM(&x, next)
	}
	return h.serveNext(&x, next)
}

// authenticate finds the record of the key the request carries, and
// refuses a request with no key that may be used now.
func (h *Handler) authenticate(x *exchange) refusal {
	secret, found := headers.TakeKey(x.r.Header, h.keyFrom)
	if !found {
		return denied(h.denials.missing)
	}
	presented, ok := keystore.Check(secret)
	if !ok {
		return denied(h.denials.invalid)
	}
	x.presented = presented
	var err error
	if h.clientLookup != nil {
		x.match, err = h.clientLookup.LookupFor(x.r.Context(), keystore.Sum(secret), ratelimit.ClientPrefix(x.client))
	} else {
		x.match, err = h.source.Lookup(x.r.Context(), keystore.Sum(secret))
	}
	switch {
	case errors.Is(err, keystore.ErrClientBusy):
		return h.busy(x)
	case err != nil:
		// The source logs its failures, once per interval; the refusal
		// is logged like any other.
		return denied(h.denials.unavailable)
	}
	k := x.match.Key
	if k == nil || (k.Type != 0 && k.Type != presented) {
		return denied(h.denials.invalid)
	}
	x.key = k
	switch old := x.match.Previous; {
	case k.Revoked:
		return denied(h.denials.revoked)
	case k.Expired(x.now):
		return denied(h.denials.expired)
	case old != nil && !x.now.Before(old.ValidUntil):
		return denied(h.denials.rotatedOut)
	case old != nil:
		h.deprecated(x, old.ValidUntil)
	}
	x.policy = h.limits.policy(k, presented)
	return refusal{}
}

// deprecated marks the answer to an old secret, still in its rotation
// grace: RFC 8594's Deprecation and Sunset say it is on its way out, and
// when; apikey_deprecated_key_used tells the operator, once an hour.
func (h *Handler) deprecated(x *exchange, until time.Time) {
	x.w.Header().Set("Deprecation", "true")
	x.w.Header().Set("Sunset", until.UTC().Format(http.TimeFormat))
	if h.events.on() && h.deprecatedDue(x.key.ID, x.now) {
		h.events.emit(eventDeprecatedKey, map[string]any{"key_id": x.key.ID, "service": h.Service,
			"valid_until": until.UTC().Format(time.RFC3339)})
	}
}

// authorize refuses what the authenticated key may not do here: its
// approval, type, client address, service, path and method (method
// overrides included), and a body larger than the route reads.
func (h *Handler) authorize(x *exchange) refusal {
	k, r := x.key, x.r
	switch {
	case k.Paused:
		return forbidden(h.denials.paused)
	case k.Pending:
		return forbidden(h.denials.pending)
	case h.allowTypes&(1<<x.presented) == 0:
		return forbidden(h.denials.keyType)
	case k.RestrictsIP() && !k.AllowsIP(x.client):
		return forbidden(h.denials.ip)
	case h.Service != "" && !k.AllowsService(h.Service):
		return forbidden(h.denials.service)
	case k.HasPermissions() && !canonicalPath(r):
		return forbidden(h.denials.path)
	case !k.Permits(r):
		return forbidden(h.denials.method)
	}
	// A body its Content-Length puts over what a route with tokens reads
	// is refused before any of it is read, the override check's included.
	if h.tokens != nil && r.ContentLength > h.tokens.maxBody {
		f := h.tooLarge()
		f.unread = true
		return f
	}
	x.peek = bodyHold{bodies: h.held, keyID: k.ID, perKey: h.peekPerKey, total: h.peekTotal}
	if d := h.overrideRefusal(k, r, &x.peek); d != nil {
		f := forbidden(d)
		f.unread = d == h.denials.keyBodies || d == h.denials.allBodies
		return f
	}
	return refusal{}
}

// spend takes the request from the key's request limits: only requests
// that passed every check spend.
func (h *Handler) spend(x *exchange) refusal {
	res, err := h.counters.Take(x.r.Context(), x.key.ID, x.policy)
	if err != nil {
		// The store logs its failures, once per change of state.
		return denied(h.denials.unavailable)
	}
	x.res = res
	if !res.Uncounted {
		headers.WriteRateLimit(x.w.Header(), res, res.Now)
	}
	if c := x.call; c != nil && !c.res.Uncounted && !c.policy.IsZero() {
		headers.WriteTokenLimits(x.w.Header(), c.res, c.res.Now)
	}
	switch {
	case res.Allowed:
		return refusal{}
	case res.DeniedBy == ratelimit.DailyLimit:
		h.quotaExceeded(x)
		return tooMany(decisionQuotaExceeded, "", quotaMessage(res), res.RetryAfter, true)
	default:
		return tooMany(decisionRateLimited, reasonBurst, burstMessage(x.policy, res), res.RetryAfter, false)
	}
}

// admit readies an admitted request for the next handler: the
// placeholders, the upstream's credential in place of the key, and the
// request counted in usage, metrics and quota warnings.
func (h *Handler) admit(x *exchange) {
	r, k := x.r, x.key
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	h.setPlaceholders(repl, k, x.presented)
	h.credential.Apply(r.Header, repl) // after the placeholders, which it may use
	// Request trailers come after the checks: none is passed on, so no key,
	// credential or override can arrive in one.
	r.Trailer = nil

	h.usage.Add(k.ID, h.Service, r.Method, usage.Endpoint(r.URL.Path, h.usageDepth), x.now)
	h.counted(x, allowedIndex)
	h.quotaWarning(x)
	if c := h.logger.Check(zapcore.DebugLevel, "request allowed"); c != nil {
		c.Write(zap.String("key_id", k.ID), zap.String("method", loggedMethod(r.Method)), zap.String("path", loggedPath(r.URL.Path)))
	}
}

// quotaWarning sends apikey_quota_warning when the key has just used 80 %
// or 90 % of its daily quota, once per level and window.
func (h *Handler) quotaWarning(x *exchange) {
	d := x.res.Daily
	if x.res.Uncounted || (!h.events.on() && !h.activity.Listening()) {
		return
	}
	if level := h.warningDue(x.key.ID, d.Limit-d.Remaining, d.Limit, d.Reset); level > 0 {
		h.activity.Publish(activity.KeyEvent{KeyID: x.key.ID, Event: "key.quota", Percent: level,
			Used: d.Limit - d.Remaining, Limit: d.Limit, Reset: d.Reset, At: x.now})
		if !h.events.on() {
			return
		}
		h.emitOnce(eventQuotaWarning, x.key.ID, "warning"+strconv.FormatInt(level, 10), d.Reset,
			map[string]any{"key_id": x.key.ID, "service": h.Service, "percent": level,
				"used": d.Limit - d.Remaining, "limit": d.Limit, "reset": d.Reset.UTC().Format(time.RFC3339)})
	}
}

// quotaExceeded sends apikey_quota_exceeded once per key and window.
func (h *Handler) quotaExceeded(x *exchange) {
	d := x.res.Daily
	if (h.events.on() || h.activity.Listening()) && h.markSent(x.key.ID, d.Reset, 100) {
		h.activity.Publish(activity.KeyEvent{KeyID: x.key.ID, Event: "key.quota", Percent: 100,
			Used: d.Limit, Limit: d.Limit, Reset: d.Reset, At: x.now})
		if !h.events.on() {
			return
		}
		h.emitOnce(eventQuotaExceeded, x.key.ID, "quota_exceeded", d.Reset, map[string]any{"key_id": x.key.ID,
			"service": h.Service, "limit": d.Limit, "reset": d.Reset.UTC().Format(time.RFC3339)})
	}
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
