package headers

import (
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// WriteRateLimit sets the rate-limit headers of a counted request: the
// RateLimit-Policy and RateLimit fields of draft-ietf-httpapi-ratelimit-headers-10,
// with a "daily" item and, when the key has a burst rate, a "burst" item;
// and X-RateLimit-Limit, -Remaining and -Reset (Unix seconds) for the daily quota.
func WriteRateLimit(h http.Header, res ratelimit.Result, now time.Time) {
	// One allocation holds the five values' bytes and the slices that
	// carry them; each slice is capped at its own element, so a later
	// append elsewhere cannot reach a neighbour, and the bytes are never
	// written again once the strings point at them.
	block := new(rateLimitBlock)
	b := block.buf[:0]
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

	if len(b) > len(block.buf) { // past the block: appends moved to the heap
		all := string(b)
		from := 0
		for i, end := range ends {
			block.vals[i] = all[from:end]
			from = end
		}
	} else {
		from := 0
		for i, end := range ends {
			block.vals[i] = unsafe.String(&block.buf[from], end-from)
			from = end
		}
	}
	h["Ratelimit-Policy"] = block.vals[0:1:1]
	h["Ratelimit"] = block.vals[1:2:2]
	h["X-Ratelimit-Limit"] = block.vals[2:3:3]
	h["X-Ratelimit-Remaining"] = block.vals[3:4:4]
	h["X-Ratelimit-Reset"] = block.vals[4:5:5]
}

// rateLimitBlock is the one allocation of WriteRateLimit.
type rateLimitBlock struct {
	vals [5]string
	buf  [176]byte
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

// WriteTokenLimits adds a request's token budgets to the RateLimit-Policy
// and RateLimit fields WriteRateLimit wrote, as items of their own:
// "tokens-daily", "tokens-minute" and "tokens-model", each with the
// parameter apikey-unit=tokens (draft-ietf-httpapi-ratelimit-headers-11
// has no unit for tokens, and advises a vendor-prefixed parameter). Only
// for routes with tokens, so it may allocate.
func WriteTokenLimits(h http.Header, res ratelimit.TokenResult, now time.Time) {
	var policy, usage []byte
	for _, item := range []struct {
		name string
		u    ratelimit.Usage
	}{{"tokens-daily", res.Daily}, {"tokens-minute", res.Minute}, {"tokens-model", res.Model}} {
		if item.u.Limit <= 0 {
			continue
		}
		if len(policy) > 0 {
			policy, usage = append(policy, ", "...), append(usage, ", "...)
		}
		policy = append(appendPolicyItem(policy, item.name, item.u), ";apikey-unit=tokens"...)
		usage = append(appendUsageItem(usage, item.name, item.u, now), ";apikey-unit=tokens"...)
	}
	if len(policy) == 0 {
		return
	}
	for name, add := range map[string][]byte{"Ratelimit-Policy": policy, "Ratelimit": usage} {
		if old := h[name]; len(old) > 0 && old[0] != "" {
			h[name] = []string{old[0] + ", " + string(add)}
		} else {
			h[name] = []string{string(add)}
		}
	}
}
