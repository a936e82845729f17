package apikey

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
	"github.com/moodmnky/caddy-apikey/keystore/keyservice"
	"github.com/moodmnky/caddy-apikey/keystore/rediskeys"
)

// parseKeys reads the apikey directive's keys <source> [<args>] [{…}]: any
// key source module; encoded by setKeys once the block's cache is known.
func (b *handlerBlock) parseKeys(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	b.keysName = d.Val()
	modID := "http.apikey.sources." + b.keysName
	if _, err := caddy.GetModule(modID); err != nil {
		return d.Errf("unknown key source %q (available: file, http, redis)", b.keysName)
	}
	var err error
	b.keys, err = caddyfile.UnmarshalModule(d, modID)
	return err
}

// parseCache reads the apikey directive's cache {…}, for a remote source.
func (b *handlerBlock) parseCache(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	b.errCache = d.Err("cache applies to a remote key source (keys http <url>, keys redis {…}); a key file is already in memory")
	var err error
	b.cache, err = parseCacheBlock(d)
	return err
}

// setKeys gives the cache to the remote key source and encodes the source.
func (b *handlerBlock) setKeys() error {
	if b.cache != nil {
		switch remote := b.keys.(type) {
		case *keyservice.HTTPSource:
			remote.Cache = b.cache
		case *rediskeys.Source:
			remote.Cache = b.cache
		default:
			return b.errCache
		}
	}
	b.h.KeysRaw = caddyconfig.JSONModuleObject(b.keys, "source", b.keysName, nil)
	return nil
}

// unmarshalEditableKeys reads the keys block of a directive that changes
// keys (the portal, the leak report endpoint): keys file <path> or keys
// redis {…}, the sources whose keys can be changed.
func unmarshalEditableKeys(d *caddyfile.Dispenser, directive string) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	name := d.Val()
	if name != "file" && name != "redis" {
		return nil, d.Errf("%s: keys %s cannot be changed; use keys file <path> or keys redis {…}", directive, name)
	}
	keys, err := caddyfile.UnmarshalModule(d, "http.apikey.sources."+name)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(keys, "source", name, nil), nil
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

// loadEditable loads the keys of the portal or the leak report endpoint
// (who), which change keys and so need a store that can be changed: a key
// file or keys on Redis. m's field KeysRaw holds raw.
func loadEditable(ctx caddy.Context, m any, raw json.RawMessage, who string) (keystore.Editable, error) {
	if raw == nil {
		return nil, fmt.Errorf("keys: %s needs the key store, e.g. keys file /etc/caddy/keys/keys.json", who)
	}
	mod, err := ctx.LoadModule(m, "KeysRaw")
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	src, ok := mod.(keystore.Editable)
	if !ok {
		return nil, fmt.Errorf("keys: %s changes keys, and keys %s cannot be changed; use keys file or keys redis", who, caddy.GetModuleName(mod))
	}
	return src, nil
}
