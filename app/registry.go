package app

import (
	"sync"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// Route is what a running apikey handler shares with the admin API and
// the portal: its key source, counters, limits and logs. A handler
// registers it when it is provisioned and unregisters it at Cleanup.
type Route struct {
	// Source is the route's key source.
	Source keystore.Source
	// Counters is the route's counter store.
	Counters ratelimit.Store
	// Policy is the limits of a key presented as type t on the route.
	Policy func(k *keystore.Key, t keystore.Type) ratelimit.Policy
	// Types are the key types the route accepts, dev before prod.
	Types []keystore.Type
	// Usage is the usage counts the route adds to.
	Usage *Usage
	// Audit is the route's audit log, or nil.
	Audit *audit.Writer
	// Failures are the failed-authentication trackers the route counts in
	// (of addresses, of networks), none when both are off.
	Failures []*ratelimit.Failures
	// Marks remember the once-per-window events sent (see Marks).
	Marks *Marks
}

// Editable is the route's source when its keys can be changed (a key
// file, Redis).
func (r *Route) Editable() (keystore.Editable, bool) {
	src, ok := r.Source.(keystore.Editable)
	return src, ok
}

// Cache is the cache of the route's source, or nil when it has none.
func (r *Route) Cache() *keycache.Cache {
	if src, ok := r.Source.(interface{ CacheOf() *keycache.Cache }); ok {
		return src.CacheOf()
	}
	return nil
}

// CountsIn reports whether the route counts failures in f.
func (r *Route) CountsIn(f *ratelimit.Failures) bool {
	for _, mine := range r.Failures {
		if mine == f {
			return true
		}
	}
	return false
}

// registry is the routes of one config, in the order they were provisioned.
type registry struct {
	mu     sync.Mutex
	routes []*Route
}

// Register adds a provisioned route. A nil App (outside a config) keeps
// no routes.
func (a *App) Register(r *Route) {
	if a == nil {
		return
	}
	a.st.routes.mu.Lock()
	a.st.routes.routes = append(a.st.routes.routes, r)
	a.st.routes.mu.Unlock()
}

// Unregister takes a route away, at its Cleanup.
func (a *App) Unregister(r *Route) {
	if a == nil || r == nil {
		return
	}
	reg := &a.st.routes
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for i, held := range reg.routes {
		if held == r {
			reg.routes = append(reg.routes[:i:i], reg.routes[i+1:]...)
			return
		}
	}
}

// Routes are the config's routes; none for a nil App.
func (a *App) Routes() []*Route {
	if a == nil {
		return nil
	}
	a.st.routes.mu.Lock()
	defer a.st.routes.mu.Unlock()
	return append([]*Route(nil), a.st.routes.routes...)
}

// EditableStore is a store the config's routes change keys in, with the
// first route that reads it (for its counters and limits).
type EditableStore struct {
	Store  keystore.Store
	Source keystore.Editable
	Route  *Route
}

// EditableStores are the stores of the config's editable sources, each
// once (by keystore.IdentityOf), in the order their routes were
// provisioned.
func (a *App) EditableStores() []EditableStore {
	var stores []EditableStore
	seen := map[any]bool{}
	for _, r := range a.Routes() {
		src, ok := r.Editable()
		if !ok {
			continue
		}
		st := src.Store()
		if id := keystore.IdentityOf(st); !seen[id] {
			seen[id] = true
			stores = append(stores, EditableStore{Store: st, Source: src, Route: r})
		}
	}
	return stores
}

// RouteOf is the first route of the config whose source changes the same
// records as store (the same keystore.IdentityOf), if any.
func (a *App) RouteOf(store keystore.Store) (*Route, bool) {
	id := keystore.IdentityOf(store)
	for _, r := range a.Routes() {
		if src, ok := r.Editable(); ok && keystore.IdentityOf(src.Store()) == id {
			return r, true
		}
	}
	return nil, false
}

// Audits are the audit logs the config's routes write, each once.
func (a *App) Audits() []*audit.Writer {
	var logs []*audit.Writer
	seen := map[*audit.Writer]bool{}
	for _, r := range a.Routes() {
		if r.Audit != nil && !seen[r.Audit] {
			seen[r.Audit] = true
			logs = append(logs, r.Audit)
		}
	}
	return logs
}
