package keystore

import "sync/atomic"

// Observer hears what key sources do, for metrics.
type Observer struct {
	// CacheResult is called for every lookup in a cache in front of a
	// remote source: "hit", "stale", "negative_hit" or "miss".
	CacheResult func(result string)
	// SourceError is called when a source fails: "file" for a rejected key
	// file version, "http" for a failed key service call.
	SourceError func(source string)
}

var observer atomic.Pointer[Observer]

// SetObserver installs the observer for every source.
func SetObserver(o *Observer) { observer.Store(o) }

// ObserveCache reports a cache lookup's result to the observer.
func ObserveCache(result string) {
	if o := observer.Load(); o != nil && o.CacheResult != nil {
		o.CacheResult(result)
	}
}

// ObserveSourceError reports a source's failure to the observer.
func ObserveSourceError(source string) {
	if o := observer.Load(); o != nil && o.SourceError != nil {
		o.SourceError(source)
	}
}
