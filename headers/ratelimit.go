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
	// All five values are written into one buffer and one string, and the
	// header slices share one backing array (each capped at its own element,
	// so a later append cannot reach a neighbour): two allocations in all.
	var buf [256]byte
	b := buf[:0]
	var ends [5]int

	b = appendPolicyItem(b, "daily", res.Daily)
	if res.Burst.Limit > 0 {
		b = append(b, ", "...)
		b = appendPolicyItem(b, "burst", res.Burst)
	}
	ends[0] = len(b)
	b = appendUsageItem(b, "daily", res.Daily, now)
	if res.Burst.Limit > 0 {
		b = append(b, ", "...)
		b = appendUsageItem(b, "burst", res.Burst, now)
	}
	ends[1] = len(b)
	b = strconv.AppendInt(b, res.Daily.Limit, 10)
	ends[2] = len(b)
	b = strconv.AppendInt(b, res.Daily.Remaining, 10)
	ends[3] = len(b)
	b = strconv.AppendInt(b, res.Daily.Reset.Unix(), 10)
	ends[4] = len(b)

	all := string(b)
	vals := make([]string, 5)
	from := 0
	for i, end := range ends {
		vals[i] = all[from:end]
		from = end
	}
	h["Ratelimit-Policy"] = vals[0:1:1]
	h["Ratelimit"] = vals[1:2:2]
	h["X-Ratelimit-Limit"] = vals[2:3:3]
	h["X-Ratelimit-Remaining"] = vals[3:4:4]
	h["X-Ratelimit-Reset"] = vals[4:5:5]
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
