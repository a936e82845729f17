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
	"github.com/moodmnky/caddy-apikey/keystore/keyservice"
	"github.com/moodmnky/caddy-apikey/keystore/rediskeys"
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

	var (
		seen      = map[string]bool{}
		authArgs  []string
		errPreset error
		keys      caddyfile.Unmarshaler // the key source, encoded once the cache is known
		keysName  string
		cache     *keycache.CacheConfig
		errCache  error
	)
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && sub != "key_from" && sub != "quota" && sub != "rate" && sub != "token_quota" && sub != "token_rate" {
			return d.Errf("%s given more than once", sub)
		}
		seen[sub] = true

		switch sub {
		case "keys":
			if !d.NextArg() {
				return d.ArgErr()
			}
			keysName = d.Val()
			modID := "http.apikey.sources." + keysName
			if _, err := caddy.GetModule(modID); err != nil {
				return d.Errf("unknown key source %q (available: file, http, redis)", keysName)
			}
			var err error
			if keys, err = caddyfile.UnmarshalModule(d, modID); err != nil {
				return err
			}

		case "cache":
			if d.NextArg() {
				return d.ArgErr()
			}
			errCache = d.Err("cache applies to a remote key source (keys http <url>, keys redis {…}); a key file is already in memory")
			var err error
			if cache, err = parseCacheBlock(d); err != nil {
				return err
			}

		case "key_from":
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
			h.KeyFrom = append(h.KeyFrom, loc)

		case "service":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Service = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}

		case "allow_types":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if _, err := keystore.ParseType(a); err != nil {
					return d.Errf("allow_types: %v", err)
				}
			}
			h.AllowTypes = args

		case "upstream_auth":
			authArgs = d.RemainingArgs()
			errPreset = d.Errf("upstream_auth <value> needs a service with a preset (%s); otherwise use upstream_auth bearer <token> or upstream_auth header <Name> <value>",
				strings.Join(headers.PresetNames(), ", "))
			switch {
			case len(authArgs) == 1 && (authArgs[0] == "bearer" || authArgs[0] == "header" || authArgs[0] == "file"):
				return d.Errf("upstream_auth %s: missing arguments", authArgs[0])
			case len(authArgs) == 1:
			case len(authArgs) == 2 && (authArgs[0] == "bearer" || authArgs[0] == "file"):
			case len(authArgs) == 3 && authArgs[0] == "header" && authArgs[2] != "file":
			case len(authArgs) == 3 && authArgs[0] == "bearer" && authArgs[1] == "file":
			case len(authArgs) == 4 && authArgs[0] == "header" && authArgs[2] == "file":
			default:
				return d.Err("want upstream_auth <value>, upstream_auth bearer <token>, upstream_auth header <Name> <value>, or file <path> in place of the value")
			}
			if strings.TrimSpace(authArgs[len(authArgs)-1]) == "" {
				return d.Err("upstream_auth: the value is empty")
			}

		case "error_format":
			if !d.AllArgs(&h.ErrorFormat) {
				return d.ArgErr()
			}
			if _, err := parseErrorFormat(h.ErrorFormat); err != nil {
				return d.Err(err.Error())
			}

		case "preflight":
			if !d.AllArgs(&h.Preflight) {
				return d.ArgErr()
			}
			if h.Preflight != "pass" && h.Preflight != "authenticate" {
				return d.Errf("preflight: %q is not pass or authenticate", h.Preflight)
			}

		case "quota":
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
			if _, dup := h.Quota[typ]; dup {
				return d.Errf("quota %s given more than once", typ)
			}
			if h.Quota == nil {
				h.Quota = map[string]int64{}
			}
			h.Quota[typ] = n

		case "tokens":
			if !d.AllArgs(&h.Tokens) {
				return d.Errf("want tokens openai|ollama")
			}
			if h.Tokens != "openai" && h.Tokens != "ollama" {
				return d.Errf("tokens %q: want openai or ollama (the answer format to read usage from)", h.Tokens)
			}

		case "token_quota", "token_rate":
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
			m := &h.TokenQuota
			if sub == "token_rate" {
				m = &h.TokenRate
			}
			if _, dup := (*m)[typ]; dup {
				return d.Errf("%s %s given more than once", sub, typ)
			}
			if *m == nil {
				*m = map[string]int64{}
			}
			(*m)[typ] = n

		case "default_max_tokens", "max_request_body":
			var value string
			if !d.AllArgs(&value) {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("%s %q is not a positive whole number", sub, value)
			}
			if sub == "default_max_tokens" {
				h.DefaultMaxTokens = n
			} else {
				h.MaxRequestBody = n
			}

		case "max_inflight_body":
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
			h.MaxInflightBody = c

		case "rate":
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
			if _, dup := h.Rate[typ]; dup {
				return d.Errf("rate %s given more than once", typ)
			}
			if h.Rate == nil {
				h.Rate = map[string]string{}
			}
			h.Rate[typ] = value

		case "quota_timezone":
			if !d.AllArgs(&h.QuotaTimezone) {
				return d.ArgErr()
			}
			if _, err := time.LoadLocation(h.QuotaTimezone); err != nil {
				return d.Errf("quota_timezone: unknown time zone %q (want an IANA name such as Europe/Berlin)", h.QuotaTimezone)
			}

		case "failed_auth_limit":
			if !d.AllArgs(&h.FailedAuthLimit) {
				return d.ArgErr()
			}
			if h.FailedAuthLimit != "off" {
				if _, err := rate.Parse(h.FailedAuthLimit); err != nil {
					return d.Errf("failed_auth_limit: %v (or off)", err)
				}
			}

		case "failed_auth_prefix_limit":
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

		case "counters":
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
			h.CountersRaw = caddyconfig.JSONModuleObject(unm, "store", name, nil)

		case "usage_depth":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("usage_depth: %q is not a positive whole number", v)
			}
			h.UsageDepth = n

		case "usage_retention":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("usage_retention: %q is not a positive duration (e.g. 30d)", v)
			}
			h.UsageRetention = caddy.Duration(dur)

		case "usage_file":
			if !d.AllArgs(&h.UsageFile) {
				return d.ArgErr()
			}

		case "usage_save_interval":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("usage_save_interval: %q is not a positive duration (e.g. 10s)", v)
			}
			h.UsageSaveInterval = caddy.Duration(dur)

		case "audit_log":
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

		case "metrics":
			var v string
			if !d.AllArgs(&v) || v != "per_key" {
				return d.Err("want metrics per_key")
			}
			h.Metrics = &MetricsOptions{PerKey: true}

		default:
			return d.Errf("unrecognized apikey subdirective %q", sub)
		}
	}

	if keys == nil {
		return errNoKeys
	}
	if cache != nil {
		switch remote := keys.(type) {
		case *keyservice.HTTPSource:
			remote.Cache = cache
		case *rediskeys.Source:
			remote.Cache = cache
		default:
			return errCache
		}
	}
	h.KeysRaw = caddyconfig.JSONModuleObject(keys, "source", keysName, nil)

	bearer := headers.Preset{Header: "Authorization", Scheme: "Bearer"}
	var cred headers.Credential
	switch {
	case len(authArgs) == 0:
		return nil
	case len(authArgs) <= 2 && authArgs[0] != "bearer":
		preset, ok := headers.PresetFor(h.Service)
		if !ok {
			return errPreset
		}
		if len(authArgs) == 2 {
			cred = preset.FileCredential(authArgs[1])
		} else {
			cred = preset.Credential(authArgs[0])
		}
	case len(authArgs) == 2: // bearer <token>
		cred = bearer.Credential(authArgs[1])
	case authArgs[0] == "bearer": // bearer file <path>
		cred = bearer.FileCredential(authArgs[2])
	case len(authArgs) == 3: // header <Name> <value>
		cred = headers.Credential{Header: authArgs[1], Value: authArgs[2]}
	default: // header <Name> file <path>
		cred = headers.Credential{Header: authArgs[1], File: authArgs[3]}
	}
	h.UpstreamAuth = &cred
	return nil
}

// parseCacheBlock reads:
//
//	cache {
//	    max_keys <n>
//	    ttl <duration>
//	    negative_ttl <duration>
//	    stale <duration>
//	}
func parseCacheBlock(d *caddyfile.Dispenser) (*keycache.CacheConfig, error) {
	var c keycache.CacheConfig
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return nil, d.Errf("cache: %s given more than once", sub)
		}
		seen[sub] = true
		var v string
		if !d.AllArgs(&v) {
			return nil, d.ArgErr()
		}
		var target *caddy.Duration
		switch sub {
		case "max_keys":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return nil, d.Errf("cache: max_keys %q is not a positive whole number", v)
			}
			c.MaxKeys = n
			continue
		case "ttl":
			target = &c.TTL
		case "negative_ttl":
			target = &c.NegativeTTL
		case "stale":
			target = &c.Stale
		default:
			return nil, d.Errf("unrecognized cache option %q", sub)
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return nil, d.Errf("cache: %s %q is not a positive duration", sub, v)
		}
		*target = caddy.Duration(dur)
	}
	if c.Stale != 0 && c.Stale < c.TTL {
		return nil, d.Errf("cache: stale must be at least ttl")
	}
	return &c, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
