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
	"path/filepath"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // quota_timezone must work on hosts without a zone database

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/usage"
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

	// Quota is the daily request quota per key type, e.g. {"dev": 10000}.
	// Defaults: dev 5000, prod 50000. A key record's quota_per_day wins.
	// A key spends one budget across every apikey route.
	Quota map[string]int64 `json:"quota,omitempty"`

	// Rate is the burst rate per key type, e.g. {"dev": "10/s"}, with units
	// s, m and h. None by default. A key record's rate wins.
	Rate map[string]string `json:"rate,omitempty"`

	// QuotaTimezone is the IANA time zone whose midnight resets daily
	// quotas. Default: UTC.
	QuotaTimezone string `json:"quota_timezone,omitempty"`

	// FailedAuthLimit throttles client addresses that fail authentication
	// (missing, invalid, expired or revoked key): after this many failures,
	// e.g. "20/m" (the default), the address gets 429 for the rest of the
	// period, even with a valid key. "off" disables it.
	FailedAuthLimit string `json:"failed_auth_limit,omitempty"`

	// FailedAuthPrefixLimit throttles whole networks that fail
	// authentication, counted apart from each address: after this many
	// failures from one network (the /16 of IPv4 addresses, the /48 of IPv6
	// ones, see FailedAuthPrefixIPv4 and FailedAuthPrefixIPv6), e.g.
	// "200/m", every address in it gets 429 for the rest of the period. A
	// client holding many addresses (a free IPv6 /48 is 65,536 /64s) is
	// stopped here. Default: ten times FailedAuthLimit in its period (200/m
	// by default; off when FailedAuthLimit is off). "off" disables it.
	FailedAuthPrefixLimit string `json:"failed_auth_prefix_limit,omitempty"`

	// FailedAuthPrefixIPv4 is the length of the IPv4 networks counted by
	// FailedAuthPrefixLimit, 8 to 32. Default: 16.
	FailedAuthPrefixIPv4 int `json:"failed_auth_prefix_ipv4,omitempty"`

	// FailedAuthPrefixIPv6 is the length of the IPv6 networks counted by
	// FailedAuthPrefixLimit, 16 to 64. Default: 48.
	FailedAuthPrefixIPv6 int `json:"failed_auth_prefix_ipv6,omitempty"`

	// Counters is the counter store, named by its "store" field. Default:
	// {"store": "memory"}.
	CountersRaw json.RawMessage `json:"counters,omitempty" caddy:"namespace=http.apikey.counters inline_key=store"`

	// UsageDepth is how many path segments name an endpoint in usage
	// counts; segments that look like ids count as ":id". Default: 2.
	UsageDepth int `json:"usage_depth,omitempty"`

	// UsageRetention is how long hourly usage counts are kept. Default: 30
	// days.
	UsageRetention caddy.Duration `json:"usage_retention,omitempty"`

	// UsageFile is where usage counts are saved (every 10s and at
	// shutdown). Default: apikey/usage.json in Caddy's data directory.
	UsageFile string `json:"usage_file,omitempty"`

	// AuditLog is a file that gets a JSON line, chained by SHA-256, for
	// every refusal and every management change made through the admin API.
	AuditLog string `json:"audit_log,omitempty"`

	// AuditRollSize rolls the audit log once it reaches this many bytes:
	// it is moved aside to <path>.<UTC time>, and the new log's first line
	// (audit.continued) chains to its last. Default: 100 MiB.
	AuditRollSize int64 `json:"audit_roll_size,omitempty"`

	// AuditRollKeep is how many rolled files are kept; older ones are
	// deleted. Default: 10.
	AuditRollKeep int `json:"audit_roll_keep,omitempty"`

	// AuditRollDisabled never rolls the audit log (it then grows until
	// moved aside with caddy apikey audit rotate).
	AuditRollDisabled bool `json:"audit_roll_disabled,omitempty"`

	// Metrics adjusts the Prometheus metrics.
	Metrics *MetricsOptions `json:"metrics,omitempty"`

	// ErrorFormat shapes refusal bodies for the route's clients: "default"
	// ({"error": {"status", "code", "reason", "message"}}), "openai"
	// ({"error": {"message", "type", "param", "code"}}, for OpenAI's SDKs)
	// or "ollama" ({"error": "<message>", "code"}, for Ollama's clients).
	// Default: "ollama" for service ollama, "openai" for service openai,
	// "default" otherwise.
	ErrorFormat string `json:"error_format,omitempty"`

	// Tokens turns on token budgets and model allowlists on this route,
	// naming how its upstream speaks: "openai" (chat completions,
	// completions, embeddings) or "ollama" (/api/chat, /api/generate). The
	// route then reads each request's JSON body (up to MaxRequestBody) for
	// its model and limit, reserves tokens before the upstream is called,
	// and settles to the usage the answer reports. Routes without it pay
	// nothing for this.
	Tokens string `json:"tokens,omitempty"`

	// TokenQuota is the daily token budget per key type, e.g.
	// {"dev": 100000}, in the quota_timezone day. None by default. A key
	// record's tokens_per_day wins.
	TokenQuota map[string]int64 `json:"token_quota,omitempty"`

	// TokenRate is the token budget per minute per key type, e.g.
	// {"dev": 20000}. None by default. A key record's tokens_per_minute
	// wins.
	TokenRate map[string]int64 `json:"token_rate,omitempty"`

	// DefaultMaxTokens is the completion tokens reserved for a request
	// that sets no max_tokens (max_completion_tokens, num_predict) of its
	// own. Default 1024.
	DefaultMaxTokens int64 `json:"default_max_tokens,omitempty"`

	// MaxRequestBody is the largest request body, in bytes, a route with
	// tokens reads; a larger one gets 413. Default 1 MiB.
	MaxRequestBody int64 `json:"max_request_body,omitempty"`

	// MaxInflightBody caps the bytes of request bodies a route with tokens
	// holds in memory while their requests are in flight, per key (429
	// beyond it) and in all (503 beyond it). Defaults: 64 MiB per key,
	// 512 MiB in all, counted across every route with tokens.
	MaxInflightBody *InflightBody `json:"max_inflight_body,omitempty"`

	// Preflight says what happens to a CORS preflight (OPTIONS with Origin
	// and Access-Control-Request-Method), which browsers send without
	// credentials: "pass" (the default) hands it on to the next handler
	// unauthenticated and uncounted, with the key headers removed;
	// "authenticate" checks it like any request.
	Preflight string `json:"preflight,omitempty"`

	source       keystore.Source
	clientLookup keystore.ClientLookup // source, when it limits lookups per client
	keyFrom      []headers.KeyLocation
	allowTypes   uint8 // bit per keystore.Type
	credential   headers.Prepared
	// serviceValue is Service as an interface value, for the placeholder.
	serviceValue any
	denials      denials
	format       errorFormat
	preflight    bool // pass preflights on
	logger       *zap.Logger

	limits  limits
	tokens  *tokenLimits // nil on routes without tokens
	held    *heldBodies  // the bodies requests hold (read whole on routes with tokens, their start for the override check)
	heldRef bool         // held's place in heldPool is taken
	// peekPerKey and peekTotal cap the bodies held by the override check:
	// the route's max_inflight_body, or its defaults.
	peekPerKey, peekTotal int64
	counters              ratelimit.Store
	failLimit             ratelimit.Rate
	failures              *ratelimit.Failures
	failuresKey           string // its place in failuresPool, while held
	// wideLimit and wide: the failed-authentication throttle of networks
	// of wideBits bits (IPv4, IPv6).
	wideLimit    ratelimit.Rate
	wide         *ratelimit.Failures
	wideKey      string // its place in failuresPool, while held
	wideBits     [2]int
	anon         *anonRefusals
	refusals     *refusalLog
	refusalsHeld bool
	// inlineSecrets names the secrets written in this handler's config as
	// they are (not from a file or a placeholder), for the warnings.
	inlineSecrets []string

	requests   *routeCounts
	perKey     bool
	usage      *usageTracker
	usageKey   string
	usageLeave func() // lets go of the usage's Redis, if it names one
	usageDepth int
	audit      *audit.Writer
	auditKey   string
	unwatch    func() // stops auditing the key file's changes
	events     emitter
}

// MetricsOptions adjusts the handler's metrics.
type MetricsOptions struct {
	// PerKey adds caddy_apikey_requests_by_key_total, labelled by key id.
	// Off by default: one series per key may be many.
	PerKey bool `json:"per_key,omitempty"`
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
		return errors.New("keys: a key source is required, e.g. keys file /etc/caddy/keys/keys.json")
	}
	h.inlineSecrets = inlineSecrets(h.UpstreamAuth, h.KeysRaw, h.CountersRaw) // before loading clears the raw JSON
	mod, err := ctx.LoadModule(h, "KeysRaw")
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	source, ok := mod.(keystore.Source)
	if !ok {
		return fmt.Errorf("keys: module %T is not a key source", mod)
	}
	h.source = source
	h.clientLookup, _ = source.(keystore.ClientLookup)

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

	if err := h.provisionLimits(); err != nil {
		return err
	}
	val, _, err := refusalsPool.LoadOrNew(refusalsPoolKey, func() (caddy.Destructor, error) { return newRefusalLog(), nil })
	if err != nil {
		return err
	}
	h.refusals, h.refusalsHeld = val.(*refusalLog), true
	if h.CountersRaw == nil {
		h.CountersRaw = json.RawMessage(`{"store": "memory"}`)
	}
	mod, err = ctx.LoadModule(h, "CountersRaw")
	if err != nil {
		return fmt.Errorf("counters: %w", err)
	}
	if h.counters, ok = mod.(ratelimit.Store); !ok {
		return fmt.Errorf("counters: module %T is not a counter store", mod)
	}
	if err := h.provisionTokens(); err != nil {
		return err
	}
	if err := h.provisionPeeks(); err != nil {
		return err
	}

	if err := h.provisionTracking(ctx); err != nil {
		return err
	}

	h.format = defaultErrorFormats[h.Service]
	if h.ErrorFormat != "" {
		if h.format, err = parseErrorFormat(h.ErrorFormat); err != nil {
			return fmt.Errorf("error_format: %w", err)
		}
	}
	switch h.Preflight {
	case "", "pass":
		h.preflight = true
	case "authenticate":
	default:
		return fmt.Errorf("preflight: %q is not pass or authenticate", h.Preflight)
	}

	h.serviceValue = h.Service
	h.denials = newDenials(h.format, h.Service, allowed, locs)
	h.warnAboutServer(ctx)
	return nil
}

// Validate checks the settings Provision does not need to look at twice.
func (h *Handler) Validate() error {
	seen := map[string]bool{}
	for i, loc := range h.keyFrom {
		if seen[loc.Header] {
			return fmt.Errorf("key_from[%d]: header %s is listed twice", i, loc.Header)
		}
		seen[loc.Header] = true
	}
	types := map[string]bool{}
	for _, t := range h.AllowTypes {
		if types[t] {
			return fmt.Errorf("allow_types: %s is listed twice", t)
		}
		types[t] = true
	}
	if strings.ContainsAny(h.Service, " \t\"\\") {
		return fmt.Errorf("service: %q must be one word without quotes", h.Service)
	}
	return nil
}

// Cleanup lets go of what the handler shares with other routes: the
// failed-authentication tracker, usage counts, the audit log writer, its
// place in the admin API. The key source and counter store are modules;
// Caddy cleans them up itself. It copes with a half-provisioned handler.
func (h *Handler) Cleanup() error {
	unregister(h)
	forgetServerWarnings()
	if h.unwatch != nil {
		h.unwatch()
		h.unwatch = nil
	}
	var errs []error
	errs = append(errs, h.credential.Release())
	if h.anon != nil {
		// The interval's summary is written while the audit log is held.
		h.anon.flush()
		h.anon = nil
	}
	if h.refusalsHeld {
		h.refusalsHeld = false
		_, err := refusalsPool.Delete(refusalsPoolKey)
		errs = append(errs, err)
	}
	if h.wideKey != "" {
		_, err := failuresPool.Delete(h.wideKey)
		errs = append(errs, err)
		h.wideKey = ""
	}
	if h.failuresKey != "" {
		_, err := failuresPool.Delete(h.failuresKey)
		h.failuresKey = ""
		errs = append(errs, err)
	}
	if h.heldRef {
		// h.held stays: a request still in flight gives its bytes back.
		h.heldRef = false
		_, err := heldPool.Delete(heldPoolKey)
		errs = append(errs, err)
	}
	if h.usageKey != "" {
		// The last route on the file ends the tracker (which sends the
		// last counts to its Redis) before it lets go of that Redis.
		_, err := usagePool.Delete(h.usageKey)
		h.usageKey = ""
		errs = append(errs, err)
	}
	if h.usageLeave != nil {
		h.usageLeave()
		h.usageLeave = nil
	}
	if h.auditKey != "" {
		_, err := auditPool.Delete(h.auditKey)
		h.auditKey = ""
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// provisionTracking sets up metrics, usage counts, the audit log and events.
func (h *Handler) provisionTracking(ctx caddy.Context) error {
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	h.requests = countsFor(h.Service)
	h.perKey = h.Metrics != nil && h.Metrics.PerKey

	h.usageDepth = h.UsageDepth
	if h.usageDepth == 0 {
		h.usageDepth = usage.DefaultDepth
	}
	if h.usageDepth < 0 {
		return errors.New("usage_depth must be positive")
	}
	retention := time.Duration(h.UsageRetention)
	if retention == 0 {
		retention = usage.DefaultRetention
	}
	if retention < 0 {
		return errors.New("usage_retention must be positive")
	}
	path := h.UsageFile
	if path == "" {
		path = defaultUsageFile()
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("usage_file: %w", err)
	}
	val, _, err := usagePool.LoadOrNew(path, func() (caddy.Destructor, error) {
		return openUsage(path, retention), nil
	})
	if err != nil {
		return err
	}
	h.usage, h.usageKey = val.(*usageTracker), path
	// Saving and sending begin when the config runs: caddy validate reads
	// the usage file and writes nothing, to it or to Redis.
	if err := redisconn.WhenRunning(ctx, h.usage.start); err != nil {
		return err
	}
	if rs, ok := h.counters.(*ratelimit.RedisStore); ok {
		// The counters' Redis sums every instance's usage too.
		client, release := rs.Retain()
		h.usageLeave = h.usage.shareOn(client, release, rs.KeyPrefix, fmt.Sprintf("%p|%s", client, rs.KeyPrefix))
	}

	if h.AuditLog != "" {
		if h.audit, err = openAudit(h.AuditLog); err != nil {
			return fmt.Errorf("audit_log: %w", err)
		}
		h.auditKey = h.audit.Path()
		roll := audit.Roll{Size: defaultAuditRollSize, Keep: defaultAuditRollKeep}
		if h.AuditRollSize > 0 {
			roll.Size = h.AuditRollSize
		}
		if h.AuditRollKeep > 0 {
			roll.Keep = h.AuditRollKeep
		}
		if h.AuditRollDisabled {
			roll = audit.Roll{}
		}
		// Routes that share the log share its writer: the last loaded sets it.
		h.audit.SetRoll(roll)
		// Whoever changes the key file (the commands, an editor, a
		// deployment), the change is recorded: once per file and log.
		if src, ok := h.source.(*keyfile.FileSource); ok {
			writer, file := h.audit, src.AbsPath()
			h.unwatch = src.OnChange(writer.Path(), func(changes []keystore.Change) {
				for _, c := range changes {
					writer.Log(audit.Entry{"event": c.Event, "key_id": c.ID, "actor": "key_file", "file": file})
				}
			})
		}
	}
	h.anon = h.refusals.anonFor(h.auditKey, h.audit, h.logger)
	h.events = newEmitter(ctx)
	register(h)
	return nil
}

// ServeHTTP admits or refuses the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	now := time.Now()
	if (h.failures != nil && h.failures.Active()) || (h.wide != nil && h.wide.Active()) {
		if wait, blocked, wide := h.blocked(clientIP(r)); blocked {
			// Logged, audited and sent as an event once, when the
			// address was blocked; here only counted.
			h.counted(r, decisionIndexes[decisionRateLimited], nil, 0, now)
			msg := throttleMessage(wait)
			if wide {
				msg = wideThrottleMessage(wait)
			}
			writeTooMany(w, h.format, decisionRateLimited, "failed_auth", msg, wait, false)
			return nil
		}
	}

	if h.preflight && r.Method == http.MethodOptions && isPreflight(r.Header) {
		// Browsers send preflights without credentials: pass them on
		// uncounted, with nothing to act with.
		h.stripPreflight(r)
		return next.ServeHTTP(w, r)
	}

	key, found := headers.TakeKey(r.Header, h.keyFrom)
	if !found {
		return h.deny(w, r, now, h.denials.missing, nil, 0)
	}
	presented, ok := keystore.Check(key)
	if !ok {
		return h.deny(w, r, now, h.denials.invalid, nil, 0)
	}
	var match keystore.Match
	var err error
	if h.clientLookup != nil {
		match, err = h.clientLookup.LookupFor(r.Context(), keystore.Sum(key), ratelimit.ClientPrefix(clientIP(r)))
	} else {
		match, err = h.source.Lookup(r.Context(), keystore.Sum(key))
	}
	if errors.Is(err, keystore.ErrClientBusy) {
		return h.busy(w, r, now, presented)
	}
	if err != nil {
		// The source logs its failures, once per interval; the refusal
		// is logged below like any other.
		return h.deny(w, r, now, h.denials.unavailable, nil, presented)
	}
	k := match.Key
	if k == nil || (k.Type != 0 && k.Type != presented) {
		return h.deny(w, r, now, h.denials.invalid, nil, presented)
	}

	if match.Previous != nil {
		// RFC 8594: every response to an old secret says it is on its way
		// out, and when.
		w.Header().Set("Deprecation", "true")
		w.Header().Set("Sunset", match.Previous.ValidUntil.UTC().Format(http.TimeFormat))
		if h.events.on() && deprecatedDue(k.ID, now) {
			h.events.emit(eventDeprecatedKey, map[string]any{"key_id": k.ID, "service": h.Service,
				"valid_until": match.Previous.ValidUntil.UTC().Format(time.RFC3339)})
		}
	}

	switch {
	case k.Revoked:
		return h.deny(w, r, now, h.denials.revoked, k, presented)
	case k.Expired(now):
		return h.deny(w, r, now, h.denials.expired, k, presented)
	case match.Previous != nil && !now.Before(match.Previous.ValidUntil):
		return h.deny(w, r, now, h.denials.rotatedOut, k, presented)
	}

	// The key is authenticated: from here on every response carries its
	// rate-limit headers, refusals included.
	policy := h.limits.policy(k, presented)
	switch {
	case k.Pending:
		return h.forbid(w, r, now, h.denials.pending, k, presented, policy)
	case h.allowTypes&(1<<presented) == 0:
		return h.forbid(w, r, now, h.denials.keyType, k, presented, policy)
	case k.RestrictsIP() && !k.AllowsIP(clientIP(r)):
		return h.forbid(w, r, now, h.denials.ip, k, presented, policy)
	case h.Service != "" && !k.AllowsService(h.Service):
		return h.forbid(w, r, now, h.denials.service, k, presented, policy)
	case k.HasPermissions() && !canonicalPath(r):
		return h.forbid(w, r, now, h.denials.path, k, presented, policy)
	case !k.Permits(r):
		return h.forbid(w, r, now, h.denials.method, k, presented, policy)
	}
	// A body its Content-Length puts over what a route with tokens reads
	// is refused before any of it is read, the override check's included.
	if h.tokens != nil && r.ContentLength > h.tokens.maxBody {
		answerUnread(w)
		h.refuseRequest(w, r, now, k, presented, http.StatusRequestEntityTooLarge, reasonBodyTooLarge,
			fmt.Sprintf("The request body is over %d bytes, the most this route reads.", h.tokens.maxBody))
		return nil
	}
	// The start of a body the override check reads is held until the
	// request ends, and counted in max_inflight_body meanwhile.
	peek := bodyHold{bodies: h.held, keyID: k.ID, perKey: h.peekPerKey, total: h.peekTotal}
	defer peek.release()
	if d := h.overrideRefusal(k, r, &peek); d != nil {
		if d == h.denials.keyBodies || d == h.denials.allBodies {
			answerUnread(w)
		}
		return h.forbid(w, r, now, d, k, presented, policy)
	}

	// On a route with tokens, the body is read for its model, and its
	// tokens are reserved before the request is counted.
	var call *llmCall
	if h.tokens != nil {
		// Its start, if the override check read it, is counted again
		// with the whole body.
		peek.release()
		if call = h.readLLMRequest(w, r, now, k, presented, policy); call == nil {
			return nil
		}
		// The body is held until the request ends, however it ends.
		defer call.hold.release()
		// From here the reservation is settled exactly once, however the
		// request ends: refused below (released), answered, or cut.
		defer h.settle(r, k, call, now)
	}

	// Only requests that pass every check above spend from the budget.
	res, err := h.counters.Take(r.Context(), k.ID, policy)
	if err != nil {
		// The store logs its failures, once per change of state.
		h.settle(r, k, call, now) // released before the answer (the deferred call is then a no-op)
		return h.deny(w, r, now, h.denials.unavailable, k, presented)
	}
	if !res.Uncounted {
		headers.WriteRateLimit(w.Header(), res, res.Now)
	}
	if call != nil && !call.res.Uncounted && !call.policy.IsZero() {
		headers.WriteTokenLimits(w.Header(), call.res, call.res.Now)
	}
	if !res.Allowed {
		h.settle(r, k, call, now) // released before the answer (the deferred call is then a no-op)
		if res.DeniedBy == ratelimit.DailyLimit {
			h.refused(r, now, decisionQuotaExceeded, "", k, presented, &res)
			if h.events.on() && markSent(k.ID, res.Daily.Reset, 100) {
				h.emitOnce(eventQuotaExceeded, k.ID, "quota_exceeded", res.Daily.Reset, map[string]any{"key_id": k.ID,
					"service": h.Service, "limit": res.Daily.Limit, "reset": res.Daily.Reset.UTC().Format(time.RFC3339)})
			}
			writeTooMany(w, h.format, decisionQuotaExceeded, "", quotaMessage(res), res.RetryAfter, true)
		} else {
			h.refused(r, now, decisionRateLimited, "burst", k, presented, &res)
			writeTooMany(w, h.format, decisionRateLimited, "burst", burstMessage(policy, res), res.RetryAfter, false)
		}
		return nil
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	h.setPlaceholders(repl, k, presented)
	h.credential.Apply(r.Header, repl) // after the placeholders, which it may use
	// Request trailers come after the checks: none is passed on, so no key,
	// credential or override can arrive in one.
	r.Trailer = nil

	h.usage.Add(k.ID, h.Service, r.Method, usage.Endpoint(r.URL.Path, h.usageDepth), now)
	h.counted(r, allowedIndex, k, presented, now)
	if !res.Uncounted && h.events.on() {
		if level := quotaWarning(k.ID, res.Daily.Limit-res.Daily.Remaining, res.Daily.Limit, res.Daily.Reset); level > 0 {
			h.emitOnce(eventQuotaWarning, k.ID, "warning"+strconv.FormatInt(level, 10), res.Daily.Reset,
				map[string]any{"key_id": k.ID, "service": h.Service, "percent": level,
					"used": res.Daily.Limit - res.Daily.Remaining, "limit": res.Daily.Limit, "reset": res.Daily.Reset.UTC().Format(time.RFC3339)})
		}
	}
	if c := h.logger.Check(zapcore.DebugLevel, "request allowed"); c != nil {
		c.Write(zap.String("key_id", k.ID), zap.String("method", loggedMethod(r.Method)), zap.String("path", loggedPath(r.URL.Path)))
	}
	if call != nil {
		return h.proxyLLM(w, r, next.ServeHTTP, call)
	}
	return next.ServeHTTP(w, r)
}

// deny answers the request with d. A failed authentication counts against
// the client address.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, now time.Time, d *denial, k *keystore.Key, t keystore.Type) error {
	h.refused(r, now, d.code, d.reason, k, t, nil)
	if d.status == http.StatusUnauthorized {
		h.failed(r)
	}
	d.write(w)
	return nil
}

// failed counts a failed authentication against the client address and
// its network, and records the block it may start.
func (h *Handler) failed(r *http.Request) {
	if h.failures == nil && h.wide == nil {
		return
	}
	addr := clientIP(r)
	if h.failures != nil && h.failures.Fail(addr, h.failLimit) {
		h.throttled(r, addr, ratelimit.ClientPrefix(addr), h.failLimit)
	}
	if h.wide != nil {
		if p := h.widePrefix(addr); h.wide.FailPrefix(p, h.wideLimit) {
			h.throttled(r, addr, p, h.wideLimit)
		}
	}
}

// blocked reports whether addr, or its network, is throttled after failed
// authentications, and for how long; wide is true for its network.
func (h *Handler) blocked(addr netip.Addr) (wait time.Duration, blocked, wide bool) {
	if h.failures != nil {
		if wait, blocked = h.failures.Blocked(addr, h.failLimit); blocked {
			return wait, true, false
		}
	}
	if h.wide != nil && h.wide.Active() {
		if wait, blocked = h.wide.BlockedPrefix(h.widePrefix(addr), h.wideLimit); blocked {
			return wait, true, true
		}
	}
	return 0, false, false
}

func (h *Handler) isBlocked(r *http.Request) bool {
	_, blocked, _ := h.blocked(clientIP(r))
	return blocked
}

// busy refuses a key check because the client address already has as many
// key checks waiting on the key source as it may: 429, counted against the
// address like a failed authentication, so that a flood of made-up keys
// ends in a block rather than in calls to the source.
func (h *Handler) busy(w http.ResponseWriter, r *http.Request, now time.Time, t keystore.Type) error {
	if h.isBlocked(r) {
		// Blocked by the wave it belongs to: counted, not logged again.
		h.counted(r, decisionIndexes[decisionRateLimited], nil, t, now)
	} else {
		h.refused(r, now, decisionRateLimited, "key_checks_in_flight", nil, t, nil)
		h.failed(r)
	}
	writeTooMany(w, h.format, decisionRateLimited, "key_checks_in_flight",
		"Too many keys from this address are being checked at once; retry in 1 s.", time.Second, false)
	return nil
}

// answerUnread makes a refusal go out without waiting for the request's
// body: Go's server would otherwise read up to 256 KiB of it before writing
// the answer. The connection is closed after the answer instead of read.
func answerUnread(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
	w.Header().Set("Connection", "close")
}

// forbid answers 403 to an authenticated key, with its rate-limit headers
// (read without spending).
func (h *Handler) forbid(w http.ResponseWriter, r *http.Request, now time.Time, d *denial, k *keystore.Key, t keystore.Type, p ratelimit.Policy) error {
	if res, err := h.counters.Peek(r.Context(), k.ID, p); err == nil && !res.Uncounted {
		headers.WriteRateLimit(w.Header(), res, res.Now)
	}
	return h.deny(w, r, now, d, k, t)
}

// counted records a decision in the metrics.
func (h *Handler) counted(r *http.Request, decision int, k *keystore.Key, t keystore.Type, start time.Time) {
	shard := shardOf(r)
	h.requests.inc(shard, decision, t)
	if h.perKey && k != nil {
		metrics.requestsByKey.WithLabelValues(k.ID, h.Service, decisions[decision]).Inc()
	}
	metrics.duration.observe(shard, time.Since(start))
}

// refused records a refusal everywhere it is recorded: the log (at info),
// the metrics, the audit log and the events. Never the key or its hash;
// the key id when the key is known.
func (h *Handler) refused(r *http.Request, start time.Time, decision, reason string, k *keystore.Key, t keystore.Type, res *ratelimit.Result) {
	h.counted(r, decisionIndexes[decision], k, t, start)
	var repeated int64
	if k != nil {
		// A known key's refusals are written 10 times a minute per kind
		// at most (refusals.go).
		var write bool
		if write, repeated = h.refusals.admit(refusalKey{k.ID, decision, reason}, start); !write {
			return
		}
	} else if h.anon != nil {
		// Unknown clients' refusals: the first ones one by one, the rest
		// summarised once an interval (refusals_summary.go).
		if addr := clientIP(r); !h.anon.admit(decision, reason, addr, h.widePrefix(addr), start) {
			return
		}
	}
	if c := h.logger.Check(zapcore.InfoLevel, "request denied"); c != nil {
		fields := []zap.Field{
			zap.String("decision", decision),
			zap.String("method", loggedMethod(r.Method)),
			zap.String("path", loggedPath(r.URL.Path)),
			zap.Stringer("client_ip", clientIP(r)),
		}
		if reason != "" {
			fields = append(fields, zap.String("reason", reason))
		}
		if k != nil {
			fields = append(fields, zap.String("key_id", k.ID))
		}
		if repeated > 0 {
			fields = append(fields, zap.Int64("repeated", repeated))
		}
		c.Write(fields...)
	}
	if h.audit == nil && !h.events.on() {
		return
	}
	data := map[string]any{"decision": decision, "service": h.Service, "method": loggedMethod(r.Method),
		"path": loggedPath(r.URL.Path), "client_ip": clientIP(r).String()}
	if reason != "" {
		data["reason"] = reason
	}
	if k != nil {
		data["key_id"] = k.ID
	}
	if repeated > 0 {
		data["repeated"] = repeated
	}
	if h.audit != nil {
		entry := audit.Entry{"event": "request.denied"}
		for name, v := range data {
			entry[name] = v
		}
		h.audit.Log(entry)
	}
	if h.events.on() {
		h.events.emit(eventDenied, data)
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

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
