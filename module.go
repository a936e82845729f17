// Package apikey is a Caddy HTTP handler that admits requests carrying a
// valid API key, decides what the key may do, strips it, and hands the
// request on with the upstream service's own credential.
package apikey

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
	_ "time/tzdata" // quota_timezone must work on hosts without a zone database

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/internal/lifecycle"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
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

	// UsageFile is where usage counts are saved (every
	// usage_save_interval and at shutdown). Default: apikey/usage.json in
	// Caddy's data directory.
	UsageFile string `json:"usage_file,omitempty"`

	// UsageSaveInterval is how often usage counts are saved to usage_file
	// and, when the counters are on Redis, added to Redis's sums: what an
	// instance killed without warning (kill -9, a power cut) loses of its
	// usage counts, and how late the cluster's usage report can be. Routes
	// on one usage file share the interval of the first that opened it.
	// Default: 10s; at least 100ms.
	UsageSaveInterval caddy.Duration `json:"usage_save_interval,omitempty"`

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

	limits      limits
	tokens      *tokenLimits // nil on routes without tokens
	held        *heldBodies  // the bodies requests hold (read whole on routes with tokens, their start for the override check)
	heldRelease func() error // lets go of held's place in the app's shared pool
	// peekPerKey and peekTotal cap the bodies held by the override check:
	// the route's max_inflight_body, or its defaults.
	peekPerKey, peekTotal int64
	counters              ratelimit.Store
	failLimit             rate.Rate
	failures              *ratelimit.Failures
	failuresRelease       func() error // lets go of failures, while held
	// wideLimit and wide: the failed-authentication throttle of networks
	// of wideBits bits (IPv4, IPv6).
	wideLimit       rate.Rate
	wide            *ratelimit.Failures
	wideRelease     func() error // lets go of wide, while held
	wideBits        [2]int
	anon            *anonRefusals
	refusals        *refusalLog
	refusalsRelease func() error
	// inlineSecrets names the secrets written in this handler's config as
	// they are (not from a file or a placeholder), for the warnings.
	inlineSecrets []string

	requests     *routeCounts
	perKey       bool
	usage        *app.Usage
	usageRelease func() error
	usageLeave   func() // lets go of the usage's Redis, if it names one
	usageDepth   int
	audit        *audit.Writer
	auditRelease func() error
	unwatch      func() // stops auditing the key file's changes
	events       emitter
	marks        *app.Marks // the events sent once per window or period
	marksRelease func() error
	// activity is the activity of the keys of the route's store (nil when
	// its keys cannot be changed, so no portal reads them).
	activity        *activity.Tracker
	activityRelease func() error

	// app is the config's apikey app (nil outside a config), where route
	// is registered for the admin API and the portal.
	app   *app.App
	route *app.Route
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
	var err error
	if h.app, err = app.Of(ctx); err != nil {
		return err
	}

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
	if h.refusals, h.refusalsRelease, err = app.Shared(refusalsKey, func() (*refusalLog, error) { return newRefusalLog(), nil }); err != nil {
		return err
	}
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
	h.app.Unregister(h.route)
	h.route = nil
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
	// h.held stays when let go of: a request still in flight gives its
	// bytes back.
	errs = append(errs, letGo(&h.refusalsRelease), letGo(&h.wideRelease), letGo(&h.failuresRelease),
		letGo(&h.heldRelease), letGo(&h.marksRelease), letGo(&h.activityRelease))
	// The last route on the usage file ends the tracker (which sends the
	// last counts to its Redis) before it lets go of that Redis.
	errs = append(errs, letGo(&h.usageRelease))
	if h.usageLeave != nil {
		h.usageLeave()
		h.usageLeave = nil
	}
	errs = append(errs, letGo(&h.auditRelease))
	return errors.Join(errs...)
}

// letGo calls *release, if set, once.
func letGo(release *func() error) error {
	if *release == nil {
		return nil
	}
	err := (*release)()
	*release = nil
	return err
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
		path = app.DefaultUsageFile()
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("usage_file: %w", err)
	}
	every := time.Duration(h.UsageSaveInterval)
	if every == 0 {
		every = app.DefaultUsageSaveInterval
	}
	if every < app.MinUsageSaveInterval {
		return fmt.Errorf("usage_save_interval must be at least %v", app.MinUsageSaveInterval)
	}
	if h.usage, h.usageRelease, err = app.OpenUsage(path, retention, every); err != nil {
		return err
	}
	if kept := h.usage.SaveInterval(); kept != every {
		h.logger.Warn("usage file already open with another usage_save_interval; keeping it",
			zap.String("file", path), zap.Duration("kept", kept), zap.Duration("asked", every))
	}
	// Saving and sending begin when the config runs: caddy validate reads
	// the usage file and writes nothing, to it or to Redis.
	if err := lifecycle.WhenRunning(ctx, h.usage.Start); err != nil {
		return err
	}
	if rs, ok := h.counters.(*ratelimit.RedisStore); ok {
		// The counters' Redis sums every instance's usage too.
		client, release := rs.Retain()
		h.usageLeave = h.usage.ShareOn(client, release, rs.KeyPrefix, fmt.Sprintf("%p|%s", client, rs.KeyPrefix))
	}

	if h.AuditLog != "" {
		if h.audit, h.auditRelease, err = app.OpenAudit(h.AuditLog); err != nil {
			return fmt.Errorf("audit_log: %w", err)
		}
		roll := audit.Roll{Size: app.DefaultAuditRollSize, Keep: app.DefaultAuditRollKeep}
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
	h.anon = h.refusals.anonFor(h.audit, h.logger)
	h.events = newEmitter(ctx)
	if h.marks, h.marksRelease, err = app.HoldMarks(); err != nil {
		return err
	}
	if src, ok := h.source.(keystore.Editable); ok {
		if h.activity, h.activityRelease, err = app.HoldActivity(src.Store()); err != nil {
			return err
		}
	}
	h.route = h.appRoute()
	h.app.Register(h.route)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
