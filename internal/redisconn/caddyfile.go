package redisconn

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalBlock reads a block of Redis settings:
//
//	address <host:port> ...
//	master_name <name>
//	username <name>
//	password <value>
//	db <n>
//	tls
//	timeout <duration>
//
// extra handles the options of the caller's own (the dispenser stands on
// the option's name). Each option may be given once.
func UnmarshalBlock(d *caddyfile.Dispenser, c *Config, extra map[string]func() error) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("%s given more than once", sub)
		}
		seen[sub] = true
		switch sub {
		case "address":
			c.Addresses = d.RemainingArgs()
			if len(c.Addresses) == 0 {
				return d.ArgErr()
			}
		case "master_name":
			if !d.AllArgs(&c.MasterName) {
				return d.ArgErr()
			}
		case "username":
			if !d.AllArgs(&c.Username) {
				return d.ArgErr()
			}
		case "password":
			if !d.AllArgs(&c.Password) {
				return d.ArgErr()
			}
		case "db":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("db: %q is not a database number", v)
			}
			c.DB = n
		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.TLS = true
		case "timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("timeout: %q is not a positive duration", v)
			}
			c.Timeout = caddy.Duration(dur)
		default:
			if fn, ok := extra[sub]; ok {
				if err := fn(); err != nil {
					return err
				}
				continue
			}
			return d.Errf("unrecognized redis option %q", sub)
		}
	}
	return nil
}
