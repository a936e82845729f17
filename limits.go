package apikey

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"

	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// Defaults for limits a route does not set.
var (
	defaultDaily = map[keystore.Type]int64{keystore.Dev: 5000, keystore.Prod: 50000}
	// DefaultFailedAuthLimit throttles an address after 20 failed
	// authentications in a minute.
	defaultFailedAuthLimit = ratelimit.Rate{Limit: 20, Period: time.Minute}
)

// failuresPool shares one failed-authentication tracker per period among
// every apikey route, across config reloads. Routes with different periods
// keep their own windows, so neither resets the other's.
var failuresPool = caddy.NewUsagePool()

func failuresPoolKey(period time.Duration) string { return "apikey.failed_auth/" + period.String() }

// sweepEvery is how often ended blocks are reported and forgotten.
const sweepEvery = time.Second

// pooledFailures is a tracker and the goroutine that reports blocks as
// they end: one log line (and audit entry) per block with the number of
// requests it refused, instead of one per refused request.
type pooledFailures struct {
	*ratelimit.Failures
	period time.Duration
	stop   chan struct{}
	done   chan struct{}
}

func newPooledFailures(period time.Duration) *pooledFailures {
	p := &pooledFailures{Failures: ratelimit.NewFailures(nil), period: period,
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *pooledFailures) run() {
	defer close(p.done)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if ended := p.Sweep(p.period); len(ended) > 0 {
				reportBlocksEnded(p.Failures, ended)
			}
		}
	}
}

func (p *pooledFailures) Destruct() error {
	close(p.stop)
	<-p.done
	return nil
}

// limits is a route's resolved limit settings.
type limits struct {
	daily  [keystore.Prod + 1]int64
	burst  [keystore.Prod + 1]ratelimit.Rate
	window ratelimit.Window
}

// policy returns the limits for a key: the key record's own, else the route's.
func (l *limits) policy(k *keystore.Key, t keystore.Type) ratelimit.Policy {
	p := ratelimit.Policy{Daily: l.daily[t], Burst: l.burst[t], Window: l.window}
	if k.HasQuota {
		p.Daily = k.QuotaPerDay
	}
	if !k.Rate.IsZero() {
		p.Burst = k.Rate
	}
	return p
}

// provisionLimits resolves Quota, Rate, QuotaTimezone and FailedAuthLimit.
func (h *Handler) provisionLimits() error {
	for t, n := range defaultDaily {
		h.limits.daily[t] = n
	}
	for name, n := range h.Quota {
		t, err := keystore.ParseType(name)
		if err != nil {
			return fmt.Errorf("quota: %w", err)
		}
		if n < 0 {
			return fmt.Errorf("quota: %s: must not be negative", name)
		}
		h.limits.daily[t] = n
	}
	for name, s := range h.Rate {
		t, err := keystore.ParseType(name)
		if err != nil {
			return fmt.Errorf("rate: %w", err)
		}
		if h.limits.burst[t], err = ratelimit.ParseRate(s); err != nil {
			return fmt.Errorf("rate: %s: %w", name, err)
		}
	}
	loc := time.UTC
	if h.QuotaTimezone != "" {
		var err error
		if loc, err = time.LoadLocation(h.QuotaTimezone); err != nil {
			return fmt.Errorf("quota_timezone: unknown time zone %q (want an IANA name such as Europe/Berlin)", h.QuotaTimezone)
		}
	}
	h.limits.window = ratelimit.DayIn(loc)

	switch h.FailedAuthLimit {
	case "":
		h.failLimit = defaultFailedAuthLimit
	case "off":
		h.failLimit = ratelimit.Rate{}
	default:
		r, err := ratelimit.ParseRate(h.FailedAuthLimit)
		if err != nil {
			return fmt.Errorf("failed_auth_limit: %w", err)
		}
		h.failLimit = r
	}
	if !h.failLimit.IsZero() {
		key := failuresPoolKey(h.failLimit.Period)
		val, _, err := failuresPool.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newPooledFailures(h.failLimit.Period), nil
		})
		if err != nil {
			return err
		}
		h.failures = val.(*pooledFailures).Failures
		h.failuresKey = key
	}
	return nil
}

func quotaMessage(res ratelimit.Result) string {
	return "The key's daily quota of " + strconv.FormatInt(res.Daily.Limit, 10) +
		" requests is used up; it resets at " + res.Daily.Reset.UTC().Format(time.RFC3339) + "."
}

func burstMessage(p ratelimit.Policy, res ratelimit.Result) string {
	return "The key exceeded its rate of " + p.Burst.String() + "; retry in " +
		strconv.FormatInt(max(headers.Seconds(res.RetryAfter), 1), 10) + " s."
}

func throttleMessage(wait time.Duration) string {
	return "Too many failed authentications from this address; retry in " +
		strconv.FormatInt(max(headers.Seconds(wait), 1), 10) + " s."
}

// reportBlocksEnded logs each ended block once, with the requests it
// refused, and records it in the audit logs of the routes that share the
// tracker.
func reportBlocksEnded(f *ratelimit.Failures, ended []ratelimit.BlockEnd) {
	logger := caddy.Log().Named("http.handlers.apikey")
	for _, e := range ended {
		logger.Info("client address no longer throttled",
			zap.Stringer("client", e.Prefix), zap.Int64("refused", e.Refused))
	}
	seen := map[*audit.Writer]bool{}
	for _, h := range activeHandlers() {
		if h.failures != f || h.audit == nil || seen[h.audit] {
			continue
		}
		seen[h.audit] = true
		for _, e := range ended {
			h.audit.Log(audit.Entry{"event": "client.unthrottled", "client": e.Prefix.String(), "refused": e.Refused})
		}
	}
}

// throttled records, once, that a client address has just been blocked
// after failed authentications: one log line, one audit entry, one event.
// The requests it then sends are only counted in the metrics, and their
// number is reported when the block ends.
func (h *Handler) throttled(r *http.Request, addr netip.Addr) {
	until := time.Now().Add(h.failLimit.Period).UTC().Format(time.RFC3339)
	client := ratelimit.ClientPrefix(addr).String()
	h.logger.Warn("client address throttled after failed authentications",
		zap.String("client", client), zap.String("limit", h.failLimit.String()), zap.String("until", until))
	if h.audit != nil {
		h.audit.Log(audit.Entry{"event": "client.throttled", "client": client, "service": h.Service,
			"limit": h.failLimit.String(), "until": until})
	}
	if h.events.on() {
		h.events.emit(eventDenied, map[string]any{"decision": decisionRateLimited, "reason": "failed_auth",
			"service": h.Service, "method": r.Method, "path": loggedPath(r.URL.Path), "client_ip": addr.String(), "until": until})
	}
}

// maxLoggedPath bounds the request path in log lines, audit entries and
// events, so a client cannot make them grow with long paths.
const maxLoggedPath = 256

// loggedPath is p cut to maxLoggedPath bytes (on a character boundary),
// marked with "…" when cut.
func loggedPath(p string) string {
	p = maskKeys(p)
	if len(p) <= maxLoggedPath {
		return p
	}
	cut := maxLoggedPath
	for cut > 0 && !utf8.RuneStart(p[cut]) {
		cut--
	}
	return p[:cut] + "…"
}

// maskKeys replaces anything shaped like a key in a path (a client that put
// its key in the URL by mistake) with "[key]": a key never reaches a log
// line, an audit entry or an event. Prefixes are matched in any case.
func maskKeys(p string) string {
	if !hasAPIMark(p) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		rest := strings.ToUpper(p[i:min(len(p), i+9)])
		n := 0
		switch {
		case strings.HasPrefix(rest, "DEV_API_"):
			n = len("DEV_API_")
		case strings.HasPrefix(rest, "PROD_API_"):
			n = len("PROD_API_")
		}
		if n == 0 {
			b.WriteByte(p[i])
			i++
			continue
		}
		j := i + n
		for j < len(p) && j < i+n+keystore.RandomLen+keystore.ChecksumLen && isAlnum(p[j]) {
			j++
		}
		b.WriteString("[key]")
		i = j
	}
	return b.String()
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// hasAPIMark reports whether p holds "_api_" in any case, without
// allocating.
func hasAPIMark(p string) bool {
	for i := 0; i+5 <= len(p); i++ {
		if p[i] == '_' && p[i+4] == '_' && (p[i+1]|0x20) == 'a' && (p[i+2]|0x20) == 'p' && (p[i+3]|0x20) == 'i' {
			return true
		}
	}
	return false
}
