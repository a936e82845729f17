// Package app is the apikey Caddy app: the one owner of what the gateway's
// handlers, the admin API and the portal share. It holds the Redis the
// global option names, the hooks that wait for the config to run, the
// registry of the config's running routes, and the process's pooled state
// (usage counts, audit log writers, and the request path's shared values),
// which outlives a reload in caddy.UsagePool entries.
//
// Handlers reach their config's app with Of(ctx) (ctx.App("apikey")); the
// admin API reaches the running config's with Running.
package app

import (
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/internal/lifecycle"
	"github.com/moodmnky/caddy-apikey/internal/redisconn"
)

func init() {
	caddy.RegisterModule(App{})
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
// The app is in every config that has an apikey route, configured or not:
// it tells the gateway's parts when the config runs (see
// lifecycle.WhenRunning) and lists the config's routes for the admin API
// and the portal.
type App struct {
	// Redis is the Redis that keys, counters, usage and events share.
	Redis *redisconn.Config `json:"redis,omitempty"`

	st *state // made by Provision
}

// state is what the app holds for its config, behind a pointer so that
// the module value can be copied.
type state struct {
	hooks  lifecycle.Hooks
	routes registry
	warned sync.Map // subjects warned about in this config (see Once)
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: lifecycle.AppName, New: func() caddy.Module { return new(App) }}
}

// Provision makes the app's state.
func (a *App) Provision(caddy.Context) error {
	a.st = new(state)
	return nil
}

// Start runs what waited for the config to run (see lifecycle.WhenRunning).
func (a *App) Start() error {
	a.st.hooks.Start()
	return nil
}

// Stop does nothing: the routes let go of what they hold in their Cleanup.
func (*App) Stop() error { return nil }

// RunHooks are the hooks Start runs.
func (a *App) RunHooks() *lifecycle.Hooks { return &a.st.hooks }

// SharedRedis is the global option's Redis, or nil.
func (a *App) SharedRedis() *redisconn.Config { return a.Redis }

// Once reports whether subject is warned about for the first time in this
// config: a warning about a server that several routes share is written
// once per config load. Outside a config (a nil App) every warning is
// written.
func (a *App) Once(subject any) bool {
	if a == nil {
		return true
	}
	_, dup := a.st.warned.LoadOrStore(subject, struct{}{})
	return !dup
}

// Of returns the app of the config ctx provisions, loading it if the
// config names none; nil for a context outside any config (caddy.NewContext
// of an empty Context, as tools and tests make).
func Of(ctx caddy.Context) (a *App, err error) {
	defer func() {
		if recover() != nil { // caddy.Context.App reads the config it has not got
			a, err = nil, nil
		}
	}()
	val, err := ctx.App(lifecycle.AppName)
	if err != nil {
		return nil, err
	}
	a, _ = val.(*App)
	return a, nil
}

// Running returns the app of the running config (caddy.ActiveContext), or
// nil when it has none: then no route runs.
func Running() *App {
	val, err := caddy.ActiveContext().AppIfConfigured(lifecycle.AppName)
	if err != nil {
		return nil
	}
	a, _ := val.(*App)
	return a
}

// Interface guards
var (
	_ caddy.Provisioner      = (*App)(nil)
	_ caddy.App              = (*App)(nil)
	_ lifecycle.Holder       = (*App)(nil)
	_ redisconn.SharedHolder = (*App)(nil)
)
