package apikey

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/usage"
)

// The request counters and the duration histogram are counted in shards,
// picked per request, and summed when Prometheus scrapes: a
// single counter that every core adds to on every request would make the
// cores wait on each other. They are package-wide, so that counts survive a
// config reload; each config registers the collector in its own registry.
// That is what Caddy's own metrics do (reverse_proxy's upstreams_healthy,
// the admin API's counters): the apikey app lives and dies with a config,
// so it cannot be the owner of counts that outlive one (docs/choices.md).

// allowedIndex is the decision index of an admitted request.
const allowedIndex = 0

// decisions are every value of the decision label.
var decisions = []string{
	"allowed", decisionMissingKey, decisionInvalidKey, decisionExpiredKey, decisionRevokedKey,
	decisionForbidden, decisionRateLimited, decisionQuotaExceeded, decisionUnavailable, decisionInvalidRequest,
}

const numDecisions = 10

// decisionIndexes maps a decision to its index in decisions.
var decisionIndexes = func() map[string]int {
	if len(decisions) != numDecisions {
		panic("numDecisions is out of date")
	}
	m := map[string]int{}
	for i, d := range decisions {
		m[d] = i
	}
	return m
}()

var keyTypeLabels = [3]string{"unknown", "dev", "prod"}

const metricShards = 16

// routeCounts are one service's request counts, by decision and key type.
type routeCounts struct {
	shards [metricShards]struct {
		n [numDecisions][3]atomic.Uint64
		_ [64]byte // keeps shards off each other's cache lines
	}
}

func (rc *routeCounts) inc(shard uintptr, decision int, t keystore.Type) {
	rc.shards[shard].n[decision][t].Add(1)
}

// shardOf picks a shard from the request's address: requests served at the
// same moment are different objects, so they land apart, for free. The
// address is mixed (Fibonacci hashing) so that allocation strides do not
// favour some shards.
func shardOf(r *http.Request) uintptr {
	return uintptr(uint64(uintptr(unsafe.Pointer(r))) * 0x9E3779B97F4A7C15 >> 60)
}

// durationBuckets are the histogram's upper bounds, in seconds.
var durationBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25}

type durationHistogram struct {
	shards [metricShards]struct {
		buckets [15]atomic.Uint64 // the last counts what is above every bound
		sumNs   atomic.Uint64
		_       [64]byte
	}
}

func (h *durationHistogram) observe(shard uintptr, d time.Duration) {
	sh := &h.shards[shard]
	s := d.Seconds()
	i := 0
	for i < len(durationBuckets) && s > durationBuckets[i] {
		i++
	}
	sh.buckets[i].Add(1)
	sh.sumNs.Add(uint64(max(d, 0)))
}

var metrics = struct {
	once          sync.Once
	mu            sync.Mutex
	routes        map[string]*routeCounts // by service; never removed, so counts outlive reloads
	duration      durationHistogram
	collector     *collector
	requestsByKey *prometheus.CounterVec
	// tokens counts LLM tokens by service and kind: prompt and completion
	// as reported, charged as settled (reports, or reservations for
	// answers that reported none).
	tokens *prometheus.CounterVec
	// unreported counts answers on routes with tokens that should have
	// reported usage and did not.
	unreported *prometheus.CounterVec
}{routes: map[string]*routeCounts{}}

// countTokens records one settled answer's tokens; missing says it should
// have reported usage and did not (see tokens.Reports). Services are the
// routes' own names, so the series are bounded by the config.
func countTokens(service string, prompt, completion, charged int64, reported, missing bool) {
	if metrics.tokens == nil {
		return
	}
	if reported {
		metrics.tokens.WithLabelValues(service, "prompt").Add(float64(prompt))
		metrics.tokens.WithLabelValues(service, "completion").Add(float64(completion))
	}
	if missing {
		metrics.unreported.WithLabelValues(service).Inc()
	}
	metrics.tokens.WithLabelValues(service, "charged").Add(float64(charged))
}

// countsFor returns the shared counts of a service.
func countsFor(service string) *routeCounts {
	metrics.mu.Lock()
	defer metrics.mu.Unlock()
	rc := metrics.routes[service]
	if rc == nil {
		rc = new(routeCounts)
		metrics.routes[service] = rc
	}
	return rc
}

// collector turns the sharded counts into Prometheus metrics on scrape.
type collector struct {
	requests, duration, usageFolded *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.duration
	ch <- c.usageFolded
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	metrics.mu.Lock()
	routes := make(map[string]*routeCounts, len(metrics.routes))
	for s, rc := range metrics.routes {
		routes[s] = rc
	}
	metrics.mu.Unlock()
	for service, rc := range routes {
		for d := range numDecisions {
			for t, label := range keyTypeLabels {
				var sum uint64
				for i := range rc.shards {
					sum += rc.shards[i].n[d][t].Load()
				}
				ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(sum), service, decisions[d], label)
			}
		}
	}
	// The count is the buckets' sum, so a scrape during traffic is never
	// inconsistent.
	var buckets [15]uint64
	var count, sumNs uint64
	for i := range metrics.duration.shards {
		sh := &metrics.duration.shards[i]
		for b := range buckets {
			n := sh.buckets[b].Load()
			buckets[b] += n
			count += n
		}
		sumNs += sh.sumNs.Load()
	}
	cumulative := map[float64]uint64{}
	var running uint64
	for b, bound := range durationBuckets {
		running += buckets[b]
		cumulative[bound] = running
	}
	ch <- prometheus.MustNewConstHistogram(c.duration, count, float64(sumNs)/float64(time.Second), cumulative)

	for reason, n := range map[string]*atomic.Uint64{"method": &usage.Folds.Method,
		"endpoint_limit": &usage.Folds.Endpoint, "series_limit": &usage.Folds.Series} {
		ch <- prometheus.MustNewConstMetric(c.usageFolded, prometheus.CounterValue, float64(n.Load()), reason)
	}
}

func initMetrics() {
	metrics.once.Do(func() {
		const ns, sub = "caddy", "apikey"
		metrics.collector = &collector{
			requests: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "requests_total"),
				"Requests seen by the apikey handler, by service, decision and key type.",
				[]string{"service", "decision", "key_type"}, nil),
			duration: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "check_duration_seconds"),
				"Time the apikey handler spends deciding on a request, before handing it on.", nil, nil),
			usageFolded: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "usage_folded_total"),
				"Requests whose usage count was folded by a bound: a made-up method (method), past a key's endpoints in an hour (endpoint_limit), past the total of counters (series_limit).",
				[]string{"reason"}, nil),
		}
		metrics.requestsByKey = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_by_key_total",
			Help: "Requests by key id, service and decision; only from routes with metrics per_key.",
		}, []string{"key_id", "service", "decision"})
		metrics.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tokens_total",
			Help: "LLM tokens on routes with tokens, by service and kind: prompt and completion as the upstream reported, charged as settled to the budgets.",
		}, []string{"service", "kind"})
		metrics.unreported = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "token_reports_missing_total",
			Help: "Answers on routes with tokens that should have reported usage and did not: 2xx answers of endpoints that generate (chat, completions, responses, embeddings; Ollama chat, generate, embed) cut before their report, or from upstreams that do not report. They were charged their reservation, or the content chunks they passed when more.",
		}, []string{"service"})
	})
}

// registerMetrics adds the collectors to a config's registry; a second
// apikey route in the same config finds them there already.
func registerMetrics(registry *prometheus.Registry) error {
	initMetrics()
	collectors := []prometheus.Collector{metrics.collector, metrics.requestsByKey, metrics.tokens, metrics.unreported, audit.Collector()}
	for _, c := range append(collectors, keystore.Collectors()...) {
		if err := registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}
