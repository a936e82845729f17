package redisconn

import (
	"errors"
	"fmt"
	"sync"

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
//
// The app also tells the gateway's parts when the config runs (see
// WhenRunning): it is in every config that has an apikey route, configured
// or not.
type App struct {
	// Redis is the Redis that keys, counters, usage and events share.
	Redis *Config `json:"redis,omitempty"`

	started bool // guarded by startMu
	onStart []func()
}

// startMu guards every App's started and onStart.
var startMu sync.Mutex

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "apikey", New: func() caddy.Module { return new(App) }}
}

// Start runs what waited for the config to run (see WhenRunning).
func (a *App) Start() error {
	startMu.Lock()
	hooks := a.onStart
	a.started, a.onStart = true, nil
	startMu.Unlock()
	for _, f := range hooks {
		f()
	}
	return nil
}

// Stop does nothing.
func (*App) Stop() error { return nil }

// WhenRunning calls start once the config being provisioned runs, when
// Caddy starts its apps; never when the config is only validated (caddy
// validate, caddy adapt --validate), which provisions every module and
// starts none. The parts that write files or send to Redis (saving
// counters and usage, setting a corrupt file aside) begin there, so that
// provisioning reads and never writes. A part pooled across reloads is
// started by the first config that runs; start must cope with being called
// again by later ones.
//
// A context made outside a config (caddy.NewContext of an empty Context, as
// tools and tests do) has no apps and no start: start is called at once.
func WhenRunning(ctx caddy.Context, start func()) error {
	a, err := appOf(ctx)
	if err != nil {
		return err
	}
	if a == nil {
		start()
		return nil
	}
	startMu.Lock()
	if !a.started {
		a.onStart = append(a.onStart, start)
		startMu.Unlock()
		return nil
	}
	startMu.Unlock()
	start()
	return nil
}

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

// appOf returns the config's apikey app, loading it if the config names
// none; nil for a context outside any config.
func appOf(ctx caddy.Context) (a *App, err error) {
	defer func() {
		if recover() != nil { // caddy.Context.App reads the config it has not got
			a, err = nil, nil
		}
	}()
	val, err := ctx.App("apikey")
	if err != nil {
		return nil, err
	}
	return val.(*App), nil
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
