package headers

import (
	"net/http"
	"strconv"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// WriteRateLimit sets the rate-limit headers of a counted request: the
// RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-headers-10,
// with a "daily" item and, when the key has a burst rate, a "burst" item;
// and X-RateLimit-Limit, -Remaining and -Reset (Unix seconds) for the daily quota.
func WriteRateLimit(h http.Header, res ratelimit.Result, now time.Time) {
	var buf [160]byte

	b := appendPolicyItem(buf[:0], "daily", res.Daily)
	if res.Burst.Limit > 0 {
		b = append(b, ", "...)
		b = appendPolicyItem(b, "burst", res.Burst)
	}
	h["Ratelimit-Policy"] = []string{string(b)}

	b = appendUsageItem(buf[:0], "daily", res.Daily, now)
	if res.Burst.Limit > 0 {
		b = append(b, ", "...)
		b = appendUsageItem(b, "burst", res.Burst, now)
	}
	h["Ratelimit"] = []string{string(b)}

	h["X-Ratelimit-Limit"] = []string{strconv.FormatInt(res.Daily.Limit, 10)}
	h["X-Ratelimit-Remaining"] = []string{strconv.FormatInt(res.Daily.Remaining, 10)}
	h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(res.Daily.Reset.Unix(), 10)}
}

func appendPolicyItem(b []byte, name string, u ratelimit.Usage) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `";q=`...)
	b = strconv.AppendInt(b, u.Limit, 10)
	b = append(b, ";w="...)
	return strconv.AppendInt(b, Seconds(u.Window), 10)
}

func appendUsageItem(b []byte, name string, u ratelimit.Usage, now time.Time) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, u.Remaining, 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, max(Seconds(u.Reset.Sub(now)), 0), 10)
}

// Seconds rounds d up to whole seconds.
func Seconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return s
}

// SetRetryAfter sets Retry-After to d in whole seconds, rounded up, and at
// least 1 so that clients never retry at once.
func SetRetryAfter(h http.Header, d time.Duration) {
	h["Retry-After"] = []string{strconv.FormatInt(max(Seconds(d), 1), 10)}
}
