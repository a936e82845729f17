// Package lifecycle tells the gateway's parts when the config that
// provisioned them runs: the apikey app (package app) holds the Hooks, and
// the parts below it (counter stores, usage counts) wait on them without
// importing it.
package lifecycle

import (
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// Hooks are what waits for a config to run.
type Hooks struct {
	mu      sync.Mutex
	started bool
	onStart []func()
}

// Start runs what waited for the config to run, and from then on runs at
// once what is added.
func (h *Hooks) Start() {
	h.mu.Lock()
	hooks := h.onStart
	h.started, h.onStart = true, nil
	h.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// When calls start once the hooks were started: at once if they were.
func (h *Hooks) When(start func()) {
	h.mu.Lock()
	if !h.started {
		h.onStart = append(h.onStart, start)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	start()
}

// Holder is the apikey app, as seen from below it.
type Holder interface {
	// RunHooks are the hooks the app starts when the config runs.
	RunHooks() *Hooks
}

// AppName is the Caddy app that holds the hooks.
const AppName = "apikey"

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
	h, err := holderOf(ctx)
	if err != nil {
		return err
	}
	if h == nil {
		start()
		return nil
	}
	h.RunHooks().When(start)
	return nil
}

// holderOf returns the config's apikey app, loading it if the config names
// none; nil for a context outside any config.
func holderOf(ctx caddy.Context) (h Holder, err error) {
	defer func() {
		if recover() != nil { // caddy.Context.App reads the config it has not got
			h, err = nil, nil
		}
	}()
	val, err := ctx.App(AppName)
	if err != nil {
		return nil, err
	}
	h, _ = val.(Holder)
	return h, nil
}
