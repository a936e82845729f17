package apikey

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// Defaults for limits a route does not set.
var (
	defaultDaily = map[keystore.Type]int64{keystore.Dev: 5000, keystore.Prod: 50000}
	// DefaultFailedAuthLimit throttles an address after 20 failed
	// authentications in a minute.
	defaultFailedAuthLimit = rate.Rate{Limit: 20, Period: time.Minute}
)

// wideFactor: a network's failed-authentication limit is, by default, ten
// times an address's (200 a minute by default).
const wideFactor = 10

// Default network lengths of the wide failed-authentication throttle.
const (
	defaultWideIPv4 = 16
	defaultWideIPv6 = 48
)

// failuresPoolKey is the place in the app's shared pool of the
// failed-authentication tracker of a period, shared by every apikey route,
// across config reloads. Routes with different periods keep their own
// windows, so neither resets the other's.
func failuresPoolKey(period time.Duration) string { return "apikey.failed_auth/" + period.String() }

// widePoolKey is the tracker of networks: apart from the addresses', so
// that the two limits never share a window.
func widePoolKey(period time.Duration) string { return "apikey.failed_auth_prefix/" + period.String() }

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
	var (
		minute            time.Time
		written           int
		more, moreRefused int64
	)
	for {
		select {
		case <-p.stop:
			if more > 0 {
				reportBlocksEnded(p.Failures, nil, more, moreRefused)
			}
			return
		case now := <-t.C:
			if now.Sub(minute) >= time.Minute {
				if more > 0 {
					reportBlocksEnded(p.Failures, nil, more, moreRefused)
				}
				minute, written, more, moreRefused = now, 0, 0, 0
			}
			ended := p.Sweep(p.period)
			if n := min(len(ended), maxBlockEndsWritten-written); n < len(ended) {
				for _, e := range ended[n:] {
					more++
					moreRefused += e.Refused
				}
				ended = ended[:n]
			}
			if len(ended) > 0 {
				written += len(ended)
				reportBlocksEnded(p.Failures, ended, 0, 0)
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
	burst  [keystore.Prod + 1]rate.Rate
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
		if h.limits.burst[t], err = rate.Parse(s); err != nil {
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
		h.failLimit = rate.Rate{}
	default:
		r, err := rate.Parse(h.FailedAuthLimit)
		if err != nil {
			return fmt.Errorf("failed_auth_limit: %w", err)
		}
		h.failLimit = r
	}
	if !h.failLimit.IsZero() {
		period := h.failLimit.Period
		p, release, err := app.Shared(failuresPoolKey(period), func() (*pooledFailures, error) {
			return newPooledFailures(period), nil
		})
		if err != nil {
			return err
		}
		h.failures, h.failuresRelease = p.Failures, release
	}
	return h.provisionWideLimit()
}

// provisionWideLimit resolves FailedAuthPrefixLimit and its lengths.
func (h *Handler) provisionWideLimit() error {
	h.wideBits = [2]int{defaultWideIPv4, defaultWideIPv6}
	if h.FailedAuthPrefixIPv4 != 0 {
		if h.FailedAuthPrefixIPv4 < 8 || h.FailedAuthPrefixIPv4 > 32 {
			return fmt.Errorf("failed_auth_prefix_ipv4: /%d is not between /8 and /32", h.FailedAuthPrefixIPv4)
		}
		h.wideBits[0] = h.FailedAuthPrefixIPv4
	}
	if h.FailedAuthPrefixIPv6 != 0 {
		if h.FailedAuthPrefixIPv6 < 16 || h.FailedAuthPrefixIPv6 > 64 {
			return fmt.Errorf("failed_auth_prefix_ipv6: /%d is not between /16 and /64", h.FailedAuthPrefixIPv6)
		}
		h.wideBits[1] = h.FailedAuthPrefixIPv6
	}
	switch h.FailedAuthPrefixLimit {
	case "":
		// Ten times the address's limit, in its period (200/m by default);
		// off when that is off.
		h.wideLimit = rate.Rate{}
		if !h.failLimit.IsZero() {
			h.wideLimit = rate.Rate{Limit: h.failLimit.Limit * wideFactor, Period: h.failLimit.Period}
		}
	case "off":
		h.wideLimit = rate.Rate{}
	default:
		r, err := rate.Parse(h.FailedAuthPrefixLimit)
		if err != nil {
			return fmt.Errorf("failed_auth_prefix_limit: %w", err)
		}
		h.wideLimit = r
	}
	if h.wideLimit.IsZero() {
		return nil
	}
	period := h.wideLimit.Period
	p, release, err := app.Shared(widePoolKey(period), func() (*pooledFailures, error) {
		return newPooledFailures(period), nil
	})
	if err != nil {
		return err
	}
	h.wide, h.wideRelease = p.Failures, release
	return nil
}

// widePrefix is addr's network for the wide throttle.
func (h *Handler) widePrefix(addr netip.Addr) netip.Prefix {
	return ratelimit.WidePrefix(addr, h.wideBits[0], h.wideBits[1])
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

func wideThrottleMessage(wait time.Duration) string {
	return "Too many failed authentications from this address's network; retry in " +
		strconv.FormatInt(max(headers.Seconds(wait), 1), 10) + " s."
}

// reportBlocksEnded logs each ended block once, with the requests it
// refused, and records it in the audit logs of the routes that share the
// tracker in the running config; more blocks (and the requests they refused), past the budget,
// are written as one line and entry.
func reportBlocksEnded(f *ratelimit.Failures, ended []ratelimit.BlockEnd, more, moreRefused int64) {
	logger := caddy.Log().Named("http.handlers.apikey")
	for _, e := range ended {
		logger.Info("client address no longer throttled",
			zap.Stringer("client", e.Prefix), zap.Int64("refused", e.Refused))
	}
	if more > 0 {
		logger.Info("more client addresses no longer throttled",
			zap.Int64("clients", more), zap.Int64("refused", moreRefused))
	}
	seen := map[*audit.Writer]bool{}
	for _, r := range app.Running().Routes() {
		if !r.CountsIn(f) || r.Audit == nil || seen[r.Audit] {
			continue
		}
		seen[r.Audit] = true
		for _, e := range ended {
			r.Audit.Log(audit.Entry{"event": "client.unthrottled", "client": e.Prefix.String(), "refused": e.Refused})
		}
		if more > 0 {
			r.Audit.Log(audit.Entry{"event": "client.unthrottled", "client": "other", "clients": more, "refused": moreRefused})
		}
	}
}

// maxBlockEndsWritten bounds the ended blocks written one by one a
// minute; the others are written as one line (and audit entry) at the end
// of the minute.
const maxBlockEndsWritten = 100

// throttled records, once, that a client address has just been blocked
// after failed authentications: one log line, one audit entry, one event.
// The requests it then sends are only counted in the metrics, and their
// number is reported when the block ends.
func (h *Handler) throttled(x *exchange, prefix netip.Prefix, limit rate.Rate) {
	if h.anon != nil && !h.anon.admit(decisionRateLimited, reasonFailedAuth, x.client, prefix, time.Now()) {
		return // summarised with the interval's other refusals of unknown clients
	}
	until := time.Now().Add(limit.Period).UTC().Format(time.RFC3339)
	client := prefix.String()
	h.logger.Warn("client address throttled after failed authentications",
		zap.String("client", client), zap.String("limit", limit.String()), zap.String("until", until))
	if h.audit != nil {
		h.audit.Log(audit.Entry{"event": "client.throttled", "client": client, "service": h.Service,
			"limit": limit.String(), "until": until})
	}
	if h.events.on() {
		h.events.emit(eventDenied, map[string]any{"decision": decisionRateLimited, "reason": reasonFailedAuth,
			"service": h.Service, "method": loggedMethod(x.r.Method), "path": loggedPath(x.r.URL.Path), "client_ip": x.client.String(), "until": until})
	}
}

// maxLoggedPath bounds the request path in log lines, audit entries and
// events, so a client cannot make them grow with long paths.
const maxLoggedPath = 256

// loggedPath is p cut to maxLoggedPath bytes (on a character boundary),
// marked with "…" when cut.
func loggedPath(p string) string {
	p = keystore.MaskSecrets(p)
	if len(p) <= maxLoggedPath {
		return p
	}
	cut := maxLoggedPath
	for cut > 0 && !utf8.RuneStart(p[cut]) {
		cut--
	}
	return p[:cut] + "…"
}
