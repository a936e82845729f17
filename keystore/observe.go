package keystore

import "github.com/prometheus/client_golang/prometheus"

// What key sources do is counted for the metrics in collectors made once
// per process, as Caddy's own are (reverse_proxy's upstreams_healthy): each
// config registers them in its own registry (Collectors), and the counts
// survive a config reload. Sources count into them directly, so no source
// needs to be handed anything to report with.
var (
	cacheRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "apikey", Name: "cache_requests_total",
		Help: "Lookups in the cache in front of a remote key source, by result: hit, stale, negative_hit, miss.",
	}, []string{"result"})
	sourceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "apikey", Name: "source_errors_total",
		Help: "Failures of key sources: a rejected key file version, a failed key service call, a failed Redis lookup.",
	}, []string{"source"})

	// cacheResults and sourceErrorCounts are every series, made at once so
	// that each is scraped (as 0) before it first happens.
	cacheResults      = series(cacheRequests, "hit", "stale", "negative_hit", "miss")
	sourceErrorCounts = series(sourceErrors, "file", "http", "redis")
)

func series(vec *prometheus.CounterVec, labels ...string) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(labels))
	for _, l := range labels {
		m[l] = vec.WithLabelValues(l)
	}
	return m
}

// Collectors are caddy_apikey_cache_requests_total and
// caddy_apikey_source_errors_total, for a config's metrics registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{cacheRequests, sourceErrors}
}

// ObserveCache counts a lookup in a cache in front of a remote source:
// "hit", "stale", "negative_hit" or "miss".
func ObserveCache(result string) { cacheResults[result].Inc() }

// ObserveSourceError counts a source's failure: "file" for a rejected key
// file version, "http" for a failed key service call, "redis" for a failed
// Redis lookup.
func ObserveSourceError(source string) {
	if c := sourceErrorCounts[source]; c != nil {
		c.Inc()
	}
}
