package apikey

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// metrics are package-wide, so that counts survive a config reload; each
// config registers them in its own registry.
var metrics = struct {
	once          sync.Once
	requests      *prometheus.CounterVec
	requestsByKey *prometheus.CounterVec
	cache         *prometheus.CounterVec
	sourceErrors  *prometheus.CounterVec
	checkDuration prometheus.Histogram
}{}

// allowedIndex is the decision index of an admitted request.
const allowedIndex = 0

// decisions are every value of the decision label.
var decisions = []string{
	"allowed", decisionMissingKey, decisionInvalidKey, decisionExpiredKey, decisionRevokedKey,
	decisionForbidden, decisionRateLimited, decisionQuotaExceeded, decisionUnavailable,
}

func initMetrics() {
	metrics.once.Do(func() {
		const ns, sub = "caddy", "apikey"
		metrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests seen by the apikey handler, by service, decision and key type.",
		}, []string{"service", "decision", "key_type"})
		metrics.requestsByKey = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_by_key_total",
			Help: "Requests by key id, service and decision; only from routes with metrics per_key.",
		}, []string{"key_id", "service", "decision"})
		metrics.cache = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "cache_requests_total",
			Help: "Lookups in the cache in front of a remote key source, by result: hit, stale, negative_hit, miss.",
		}, []string{"result"})
		metrics.sourceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "source_errors_total",
			Help: "Failures of key sources: a rejected key file version, a failed key service call.",
		}, []string{"source"})
		metrics.checkDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "check_duration_seconds",
			Help:    "Time the apikey handler spends deciding on a request, before handing it on.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		})
		cacheResults := map[string]prometheus.Counter{}
		for _, r := range []string{"hit", "stale", "negative_hit", "miss"} {
			cacheResults[r] = metrics.cache.WithLabelValues(r)
		}
		sources := map[string]prometheus.Counter{}
		for _, s := range []string{"file", "http"} {
			sources[s] = metrics.sourceErrors.WithLabelValues(s)
		}
		keystore.SetObserver(&keystore.Observer{
			CacheResult: func(result string) { cacheResults[result].Inc() },
			SourceError: func(source string) { sources[source].Inc() },
		})
	})
}

// registerMetrics adds the collectors to a config's registry; a second
// apikey route in the same config finds them there already.
func registerMetrics(registry *prometheus.Registry) error {
	initMetrics()
	for _, c := range []prometheus.Collector{metrics.requests, metrics.requestsByKey, metrics.cache, metrics.sourceErrors, metrics.checkDuration} {
		if err := registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// routeCounters are a route's request counters, resolved once so that
// counting a request is one array index and one atomic add.
type routeCounters [][3]prometheus.Counter

// decisionIndexes maps a decision to its row in routeCounters.
var decisionIndexes = func() map[string]int {
	m := map[string]int{}
	for i, d := range decisions {
		m[d] = i
	}
	return m
}()

var keyTypeLabels = [3]string{"unknown", "dev", "prod"}

func newRouteCounters(service string) routeCounters {
	rc := make(routeCounters, len(decisions))
	for i, d := range decisions {
		for t, label := range keyTypeLabels {
			rc[i][t] = metrics.requests.WithLabelValues(service, d, label)
		}
	}
	return rc
}
