package apikey

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"

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

// failuresPool shares one failed-authentication tracker among every apikey
// route, across config reloads.
var failuresPool = caddy.NewUsagePool()

const failuresPoolKey = "apikey.failed_auth"

type pooledFailures struct{ *ratelimit.Failures }

func (pooledFailures) Destruct() error { return nil }

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
		val, _, err := failuresPool.LoadOrNew(failuresPoolKey, func() (caddy.Destructor, error) {
			return pooledFailures{ratelimit.NewFailures(nil)}, nil
		})
		if err != nil {
			return err
		}
		h.failures = val.(pooledFailures).Failures
		h.failuresHeld = true
	}
	return nil
}

// writeTooMany answers 429 with Retry-After and a JSON body whose message
// says when to come back. Built by hand: no JSON encoding per request.
func writeTooMany(w http.ResponseWriter, code, message string, retryAfter time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	headers.SetRetryAfter(h, retryAfter)
	body := make([]byte, 0, 96+len(code)+len(message))
	body = append(body, `{"error":{"status":429,"code":"`...)
	body = append(body, code...)
	body = append(body, `","message":`...)
	body = strconv.AppendQuoteToASCII(body, message)
	body = append(body, "}}\n"...)
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(body)
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
