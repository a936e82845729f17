package apikey

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("apikey", parseCaddyfile)
	// Before basic_auth puts apikey with the other auth handlers, ahead of
	// respond and reverse_proxy, so no "order" line is needed.
	httpcaddyfile.RegisterDirectiveOrder("apikey", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	apikey [<matcher>] {
//	    keys file <path>
//	    keys http <url> {
//	        header <Name> <value>
//	        timeout <duration>
//	    }
//	    keys redis {
//	        address <host:port> ...
//	        master_name <name>
//	        username <name>
//	        password <value>
//	        db <n>
//	        tls
//	        key_prefix <prefix>
//	        timeout <duration>
//	    }
//	    cache {
//	        max_keys <n>
//	        ttl <duration>
//	        negative_ttl <duration>
//	        stale <duration>
//	    }
//	    key_from header <Name> [<scheme>]
//	    service <name>
//	    allow_types dev|prod ...
//	    upstream_auth <value>
//	    upstream_auth bearer <token>
//	    upstream_auth header <Name> <value>
//	    upstream_auth [bearer | header <Name>] file <path>
//	    error_format default|openai|ollama
//	    preflight pass|authenticate
//	    quota dev|prod <n>/day
//	    rate dev|prod <n>/s|m|h
//	    quota_timezone <IANA zone>
//	    tokens openai|ollama
//	    token_quota dev|prod <n>/day
//	    token_rate dev|prod <n>/m
//	    default_max_tokens <n>
//	    max_request_body <bytes>
//	    max_inflight_body <per_key> [<total>]
//	    failed_auth_limit <n>/s|m|h | off
//	    failed_auth_prefix_limit <n>/s|m|h | off [/<ipv4 bits> /<ipv6 bits>]
//	    counters memory {
//	        file <path>
//	        persist_interval <duration>
//	    }
//	    counters redis { ... }
//	    usage_depth <n>
//	    usage_retention <duration>
//	    usage_file <path>
//	    usage_save_interval <duration>
//	    audit_log <path> {
//	        roll_size <size>
//	        roll_keep <n>
//	        roll_disabled
//	    }
//	    metrics per_key
//	}
//
// key_from may repeat, and quota, rate, token_quota and token_rate once per
// key type; every other
// subdirective is given at most once.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("apikey takes its settings in a block, not %q", d.Val())
	}

	// Errors about the whole block point at the directive's line.
	errNoKeys := d.Err("apikey needs a key source, e.g. keys file /etc/caddy/keys/keys.json")

	b := &handlerBlock{h: h}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && !repeatableSubdirectives[sub] {
			return d.Errf("%s given more than once", sub)
		}
		seen[sub] = true
		parse, ok := handlerSubdirectives[sub]
		if !ok {
			return d.Errf("unrecognized apikey subdirective %q", sub)
		}
		if err := parse(b, d); err != nil {
			return err
		}
	}

	if b.keys == nil {
		return errNoKeys
	}
	if err := b.setKeys(); err != nil {
		return err
	}
	return b.setUpstreamAuth()
}

// handlerBlock is one apikey block being read: the handler it fills, and
// what is settled only once the whole block is known (the key source takes
// the cache; upstream_auth <value> takes the service's preset).
type handlerBlock struct {
	h         *Handler
	keys      caddyfile.Unmarshaler // the key source, encoded once the cache is known
	keysName  string
	cache     *keycache.CacheConfig
	errCache  error
	authArgs  []string
	errPreset error
}

// repeatableSubdirectives may be given more than once (key_from as often as
// wanted, the others once per key type); every other subdirective once.
var repeatableSubdirectives = map[string]bool{"key_from": true, "quota": true, "rate": true, "token_quota": true, "token_rate": true}

// handlerSubdirectives reads each subdirective of the apikey block; each
// function starts on the subdirective's name.
var handlerSubdirectives = map[string]func(*handlerBlock, *caddyfile.Dispenser) error{
	"keys":                     (*handlerBlock).parseKeys,
	"cache":                    (*handlerBlock).parseCache,
	"key_from":                 (*handlerBlock).parseKeyFrom,
	"service":                  (*handlerBlock).parseService,
	"allow_types":              (*handlerBlock).parseAllowTypes,
	"upstream_auth":            (*handlerBlock).parseUpstreamAuth,
	"error_format":             (*handlerBlock).parseErrorFormat,
	"preflight":                (*handlerBlock).parsePreflight,
	"quota":                    (*handlerBlock).parseQuota,
	"rate":                     (*handlerBlock).parseRate,
	"quota_timezone":           (*handlerBlock).parseQuotaTimezone,
	"tokens":                   (*handlerBlock).parseTokens,
	"token_quota":              (*handlerBlock).parseTokenBudget,
	"token_rate":               (*handlerBlock).parseTokenBudget,
	"default_max_tokens":       (*handlerBlock).parsePositiveCount,
	"max_request_body":         (*handlerBlock).parsePositiveCount,
	"max_inflight_body":        (*handlerBlock).parseMaxInflightBody,
	"failed_auth_limit":        (*handlerBlock).parseFailedAuthLimit,
	"failed_auth_prefix_limit": (*handlerBlock).parseFailedAuthPrefixLimit,
	"counters":                 (*handlerBlock).parseCounters,
	"usage_depth":              (*handlerBlock).parseUsageDepth,
	"usage_retention":          (*handlerBlock).parseUsageDuration,
	"usage_save_interval":      (*handlerBlock).parseUsageDuration,
	"usage_file":               (*handlerBlock).parseUsageFile,
	"audit_log":                (*handlerBlock).parseAuditLog,
	"metrics":                  (*handlerBlock).parseMetrics,
}

// parseKeyFrom reads key_from header <Name> [<scheme>].
func (b *handlerBlock) parseKeyFrom(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 2 || len(args) > 3 || args[0] != "header" {
		return d.Errf("want key_from header <Name> [<scheme>], got %d arguments", len(args))
	}
	loc := headers.KeyLocation{Header: args[1]}
	if len(args) == 3 {
		loc.Scheme = args[2]
	}
	if _, err := loc.Canonical(); err != nil {
		return d.Errf("key_from: %v", err)
	}
	b.h.KeyFrom = append(b.h.KeyFrom, loc)
	return nil
}

// parseService reads service <name>.
func (b *handlerBlock) parseService(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	b.h.Service = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// parseAllowTypes reads allow_types dev|prod ....
func (b *handlerBlock) parseAllowTypes(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	for _, a := range args {
		if _, err := keystore.ParseType(a); err != nil {
			return d.Errf("allow_types: %v", err)
		}
	}
	b.h.AllowTypes = args
	return nil
}

// parseUpstreamAuth checks the shape of upstream_auth's arguments; the
// credential is made by setUpstreamAuth once the service is known.
func (b *handlerBlock) parseUpstreamAuth(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	b.authArgs = args
	b.errPreset = d.Errf("upstream_auth <value> needs a service with a preset (%s); otherwise use upstream_auth bearer <token> or upstream_auth header <Name> <value>",
		strings.Join(headers.PresetNames(), ", "))
	switch {
	case len(args) == 1 && (args[0] == "bearer" || args[0] == "header" || args[0] == "file"):
		return d.Errf("upstream_auth %s: missing arguments", args[0])
	case len(args) == 1:
	case len(args) == 2 && (args[0] == "bearer" || args[0] == "file"):
	case len(args) == 3 && args[0] == "header" && args[2] != "file":
	case len(args) == 3 && args[0] == "bearer" && args[1] == "file":
	case len(args) == 4 && args[0] == "header" && args[2] == "file":
	default:
		return d.Err("want upstream_auth <value>, upstream_auth bearer <token>, upstream_auth header <Name> <value>, or file <path> in place of the value")
	}
	if strings.TrimSpace(args[len(args)-1]) == "" {
		return d.Err("upstream_auth: the value is empty")
	}
	return nil
}

// setUpstreamAuth makes the credential upstream_auth's arguments name.
func (b *handlerBlock) setUpstreamAuth() error {
	args := b.authArgs
	bearer := headers.Preset{Header: "Authorization", Scheme: "Bearer"}
	var cred headers.Credential
	switch {
	case len(args) == 0:
		return nil
	case len(args) <= 2 && args[0] != "bearer":
		preset, ok := headers.PresetFor(b.h.Service)
		if !ok {
			return b.errPreset
		}
		if len(args) == 2 {
			cred = preset.FileCredential(args[1])
		} else {
			cred = preset.Credential(args[0])
		}
	case len(args) == 2: // bearer <token>
		cred = bearer.Credential(args[1])
	case args[0] == "bearer": // bearer file <path>
		cred = bearer.FileCredential(args[2])
	case len(args) == 3: // header <Name> <value>
		cred = headers.Credential{Header: args[1], Value: args[2]}
	default: // header <Name> file <path>
		cred = headers.Credential{Header: args[1], File: args[3]}
	}
	b.h.UpstreamAuth = &cred
	return nil
}

// parseErrorFormat reads error_format default|openai|ollama.
func (b *handlerBlock) parseErrorFormat(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&b.h.ErrorFormat) {
		return d.ArgErr()
	}
	if _, err := parseErrorFormat(b.h.ErrorFormat); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parsePreflight reads preflight pass|authenticate.
func (b *handlerBlock) parsePreflight(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&b.h.Preflight) {
		return d.ArgErr()
	}
	if b.h.Preflight != "pass" && b.h.Preflight != "authenticate" {
		return d.Errf("preflight: %q is not pass or authenticate", b.h.Preflight)
	}
	return nil
}

// parseQuota reads quota dev|prod <n>/day.
func (b *handlerBlock) parseQuota(d *caddyfile.Dispenser) error {
	var typ, value string
	if !d.AllArgs(&typ, &value) {
		return d.Errf("want quota dev|prod <n>/day")
	}
	if _, err := keystore.ParseType(typ); err != nil {
		return d.Errf("quota: %v", err)
	}
	n, err := rate.ParseDaily(value)
	if err != nil {
		return d.Err(err.Error())
	}
	if _, dup := b.h.Quota[typ]; dup {
		return d.Errf("quota %s given more than once", typ)
	}
	if b.h.Quota == nil {
		b.h.Quota = map[string]int64{}
	}
	b.h.Quota[typ] = n
	return nil
}

// parseRate reads rate dev|prod <n>/s|m|h.
func (b *handlerBlock) parseRate(d *caddyfile.Dispenser) error {
	var typ, value string
	if !d.AllArgs(&typ, &value) {
		return d.Errf("want rate dev|prod <n>/s|m|h")
	}
	if _, err := keystore.ParseType(typ); err != nil {
		return d.Errf("rate: %v", err)
	}
	if _, err := rate.Parse(value); err != nil {
		return d.Err(err.Error())
	}
	if _, dup := b.h.Rate[typ]; dup {
		return d.Errf("rate %s given more than once", typ)
	}
	if b.h.Rate == nil {
		b.h.Rate = map[string]string{}
	}
	b.h.Rate[typ] = value
	return nil
}

// parseQuotaTimezone reads quota_timezone <IANA zone>.
func (b *handlerBlock) parseQuotaTimezone(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&b.h.QuotaTimezone) {
		return d.ArgErr()
	}
	if _, err := time.LoadLocation(b.h.QuotaTimezone); err != nil {
		return d.Errf("quota_timezone: unknown time zone %q (want an IANA name such as Europe/Berlin)", b.h.QuotaTimezone)
	}
	return nil
}

// parseTokens reads tokens openai|ollama.
func (b *handlerBlock) parseTokens(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&b.h.Tokens) {
		return d.Errf("want tokens openai|ollama")
	}
	if b.h.Tokens != "openai" && b.h.Tokens != "ollama" {
		return d.Errf("tokens %q: want openai or ollama (the answer format to read usage from)", b.h.Tokens)
	}
	return nil
}

// parseTokenBudget reads token_quota dev|prod <n>/day and
// token_rate dev|prod <n>/m.
func (b *handlerBlock) parseTokenBudget(d *caddyfile.Dispenser) error {
	sub := d.Val()
	var typ, value string
	if !d.AllArgs(&typ, &value) {
		return d.Errf("want %s dev|prod <n>/%s", sub, map[string]string{"token_quota": "day", "token_rate": "m"}[sub])
	}
	if _, err := keystore.ParseType(typ); err != nil {
		return d.Errf("%s: %v", sub, err)
	}
	unit := map[string]string{"token_quota": "/day", "token_rate": "/m"}[sub]
	digits, ok := strings.CutSuffix(value, unit)
	n, err := strconv.ParseInt(digits, 10, 64)
	if !ok || err != nil || n < 0 {
		return d.Errf("%s %s %q: want a whole number of tokens and %s, e.g. 100000%s", sub, typ, value, unit, unit)
	}
	m := &b.h.TokenQuota
	if sub == "token_rate" {
		m = &b.h.TokenRate
	}
	if _, dup := (*m)[typ]; dup {
		return d.Errf("%s %s given more than once", sub, typ)
	}
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[typ] = n
	return nil
}

// parsePositiveCount reads default_max_tokens <n> and max_request_body <n>.
func (b *handlerBlock) parsePositiveCount(d *caddyfile.Dispenser) error {
	sub := d.Val()
	var value string
	if !d.AllArgs(&value) {
		return d.ArgErr()
	}
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil || n <= 0 {
		return d.Errf("%s %q is not a positive whole number", sub, value)
	}
	if sub == "default_max_tokens" {
		b.h.DefaultMaxTokens = n
	} else {
		b.h.MaxRequestBody = n
	}
	return nil
}

// parseMaxInflightBody reads max_inflight_body <per_key> [<total>].
func (b *handlerBlock) parseMaxInflightBody(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.Errf("want max_inflight_body <per_key> [<total>], sizes such as 64MiB")
	}
	c := &InflightBody{}
	for i, arg := range args {
		n, err := humanize.ParseBytes(arg)
		if err != nil || n == 0 || n > 1<<62 {
			return d.Errf("max_inflight_body: %q is not a size such as 64MiB", arg)
		}
		if i == 0 {
			c.PerKey = int64(n)
		} else {
			c.Total = int64(n)
		}
	}
	b.h.MaxInflightBody = c
	return nil
}

// parseFailedAuthLimit reads failed_auth_limit <n>/s|m|h | off.
func (b *handlerBlock) parseFailedAuthLimit(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&b.h.FailedAuthLimit) {
		return d.ArgErr()
	}
	if b.h.FailedAuthLimit != "off" {
		if _, err := rate.Parse(b.h.FailedAuthLimit); err != nil {
			return d.Errf("failed_auth_limit: %v (or off)", err)
		}
	}
	return nil
}

// parseFailedAuthPrefixLimit reads
// failed_auth_prefix_limit <n>/s|m|h | off [/<ipv4 bits> /<ipv6 bits>].
func (b *handlerBlock) parseFailedAuthPrefixLimit(d *caddyfile.Dispenser) error {
	h := b.h
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.FailedAuthPrefixLimit = d.Val()
	if h.FailedAuthPrefixLimit != "off" {
		if _, err := rate.Parse(h.FailedAuthPrefixLimit); err != nil {
			return d.Errf("failed_auth_prefix_limit: %v (or off)", err)
		}
	}
	lengths := d.RemainingArgs()
	if len(lengths) != 0 && len(lengths) != 2 {
		return d.Errf("failed_auth_prefix_limit: want <n>/s|m|h [/<ipv4 bits> /<ipv6 bits>], e.g. 200/m /16 /48")
	}
	for i, l := range lengths {
		lo, hi := 8, 32
		if i == 1 {
			lo, hi = 16, 64
		}
		n, err := strconv.Atoi(strings.TrimPrefix(l, "/"))
		if !strings.HasPrefix(l, "/") || err != nil || n < lo || n > hi {
			return d.Errf("failed_auth_prefix_limit: %q is not a prefix length from /%d to /%d", l, lo, hi)
		}
		if i == 0 {
			h.FailedAuthPrefixIPv4 = n
		} else {
			h.FailedAuthPrefixIPv6 = n
		}
	}
	return nil
}

// parseCounters reads counters memory|redis {…}, the counter store module.
func (b *handlerBlock) parseCounters(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	modID := "http.apikey.counters." + name
	if _, err := caddy.GetModule(modID); err != nil {
		return d.Errf("unknown counter store %q (available: memory, redis)", name)
	}
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return err
	}
	b.h.CountersRaw = caddyconfig.JSONModuleObject(unm, "store", name, nil)
	return nil
}

// parseUsageDepth reads usage_depth <n>.
func (b *handlerBlock) parseUsageDepth(d *caddyfile.Dispenser) error {
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return d.Errf("usage_depth: %q is not a positive whole number", v)
	}
	b.h.UsageDepth = n
	return nil
}

// parseUsageDuration reads usage_retention <duration> and
// usage_save_interval <duration>.
func (b *handlerBlock) parseUsageDuration(d *caddyfile.Dispenser) error {
	sub := d.Val()
	target, example := &b.h.UsageRetention, "30d"
	if sub == "usage_save_interval" {
		target, example = &b.h.UsageSaveInterval, "10s"
	}
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return d.Errf("%s: %q is not a positive duration (e.g. %s)", sub, v, example)
	}
	*target = caddy.Duration(dur)
	return nil
}

// parseUsageFile reads usage_file <path>.
func (b *handlerBlock) parseUsageFile(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&b.h.UsageFile) {
		return d.ArgErr()
	}
	return nil
}

// parseAuditLog reads audit_log <path> [{ roll_size, roll_keep, roll_disabled }].
func (b *handlerBlock) parseAuditLog(d *caddyfile.Dispenser) error {
	h := b.h
	if !d.AllArgs(&h.AuditLog) {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "roll_size":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<50 {
				return d.Errf("audit_log roll_size: %q is not a size such as 100MiB", v)
			}
			h.AuditRollSize = int64(n)
		case "roll_keep":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("audit_log roll_keep: %q is not a positive whole number", v)
			}
			h.AuditRollKeep = n
		case "roll_disabled":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.AuditRollDisabled = true
		default:
			return d.Errf("unrecognized audit_log option %q (roll_size, roll_keep, roll_disabled)", opt)
		}
	}
	return nil
}

// parseMetrics reads metrics per_key.
func (b *handlerBlock) parseMetrics(d *caddyfile.Dispenser) error {
	var v string
	if !d.AllArgs(&v) || v != "per_key" {
		return d.Err("want metrics per_key")
	}
	b.h.Metrics = &MetricsOptions{PerKey: true}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
