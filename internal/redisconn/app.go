package redisconn

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	caddy.RegisterModule(App{})
	httpcaddyfile.RegisterGlobalOption("apikey", parseGlobalOption)
}

// App holds settings every apikey route shares, given once in the global
// options:
//
//	{
//	    apikey {
//	        redis {
//	            address <host:port> ...
//	            ...
//	        }
//	    }
//	}
//
// A keys redis or counters redis that names no address uses its Redis.
type App struct {
	// Redis is the Redis that keys, counters, usage and events share.
	Redis *Config `json:"redis,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "apikey", New: func() caddy.Module { return new(App) }}
}

// Start does nothing: the app only holds settings.
func (App) Start() error { return nil }

// Stop does nothing.
func (App) Stop() error { return nil }

// Shared fills c from the global apikey option when c names no address.
// what names the setting for the error when there is neither.
func Shared(ctx caddy.Context, c *Config, what string) error {
	if len(c.Addresses) > 0 {
		return nil
	}
	app, err := ctx.AppIfConfigured("apikey")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("%s: no address; give one here, or once for every route in the global option apikey { redis { address … } }", what)
	}
	if err != nil {
		return err
	}
	shared := app.(*App).Redis
	if shared == nil {
		return fmt.Errorf("%s: no address, and the global apikey option has no redis block", what)
	}
	*c = *shared
	return nil
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
			app.Redis = new(Config)
			if err := UnmarshalBlock(d, app.Redis, nil); err != nil {
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

// Interface guard
var _ caddy.App = (*App)(nil)
