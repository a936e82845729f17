package app

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/moodmnky/caddy-apikey/internal/redisconn"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("apikey", parseGlobalOption)
}

// parseGlobalOption reads the global apikey option.
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	d.Next() // option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	app := new(App)
	for d.NextBlock(0) {
		switch d.Val() {
		case "redis":
			if app.Redis != nil {
				return nil, d.Err("redis given more than once")
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			app.Redis = new(redisconn.Config)
			if err := redisconn.UnmarshalBlock(d, app.Redis, nil); err != nil {
				return nil, err
			}
			if len(app.Redis.Addresses) == 0 {
				return nil, d.Err("apikey redis needs an address")
			}
		default:
			return nil, d.Errf("unrecognized apikey option %q", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "apikey", Value: caddyconfig.JSON(app, nil)}, nil
}
