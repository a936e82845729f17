package app

import (
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// The process's state that outlives a config reload, as Caddy keeps such
// state: in caddy.UsagePool entries, one reference per route that holds
// them, destructed when the last route lets go. This package is the one
// that owns them.
var (
	// usagePool holds the usage counts of each usage file (see OpenUsage).
	usagePool = caddy.NewUsagePool()
	// auditPool holds one writer per audit log (see OpenAudit).
	auditPool = caddy.NewUsagePool()
	// sharedPool holds the request path's process-wide values: the
	// failed-authentication trackers, the bodies held, the refusal log,
	// the marks of events sent (see Shared).
	sharedPool = caddy.NewUsagePool()
)

// Shared returns the process's value under key, made by newValue the first
// time, and the function that lets go of it (once; later calls do
// nothing). Routes of the old and the new config share the value across
// a reload; the last to let go destructs it.
func Shared[T caddy.Destructor](key string, newValue func() (T, error)) (T, func() error, error) {
	return load(sharedPool, key, newValue)
}

// References is how many holders the shared value under key has, and
// whether there is one (see caddy.UsagePool.References).
func References(key string) (int, bool) { return sharedPool.References(key) }

// Current is the shared value under key, if there is one, without holding
// it.
func Current(key string) (v any, ok bool) {
	sharedPool.Range(func(k, val any) bool {
		if k == key {
			v, ok = val, true
			return false
		}
		return true
	})
	return v, ok
}

func load[T caddy.Destructor](pool *caddy.UsagePool, key any, newValue func() (T, error)) (T, func() error, error) {
	val, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) { return newValue() })
	if err != nil {
		var zero T
		return zero, nil, err
	}
	var once sync.Once
	release := func() (err error) {
		once.Do(func() { _, err = pool.Delete(key) })
		return err
	}
	return val.(T), release, nil
}
