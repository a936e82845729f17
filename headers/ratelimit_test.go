package headers

import (
	"net/http"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/ratelimit"
)

func TestWriteRateLimit(t *testing.T) {
	now := time.Date(2026, 11, 27, 23, 0, 0, 0, time.UTC)
	reset := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	res := ratelimit.Result{
		Allowed: true,
		Daily:   ratelimit.Usage{Limit: 5000, Remaining: 4999, Reset: reset, Window: 24 * time.Hour},
	}
	h := http.Header{}
	WriteRateLimit(h, res, now)
	for name, want := range map[string]string{
		"RateLimit-Policy":      `"daily";q=5000;w=86400`,
		"RateLimit":             `"daily";r=4999;t=3600`,
		"X-RateLimit-Limit":     "5000",
		"X-RateLimit-Remaining": "4999",
		"X-RateLimit-Reset":     "1795824000",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}

	res.Burst = ratelimit.Usage{Limit: 10, Remaining: 9, Reset: now.Add(100 * time.Millisecond), Window: time.Second}
	h = http.Header{}
	WriteRateLimit(h, res, now)
	if got := h.Get("RateLimit-Policy"); got != `"daily";q=5000;w=86400, "burst";q=10;w=1` {
		t.Errorf("policy with burst: %q", got)
	}
	if got := h.Get("RateLimit"); got != `"daily";r=4999;t=3600, "burst";r=9;t=1` {
		t.Errorf("ratelimit with burst: %q", got)
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	for d, want := range map[time.Duration]string{
		100 * time.Millisecond: "1", time.Second: "1", 1001 * time.Millisecond: "2", 0: "1", 3600 * time.Second: "3600",
	} {
		h := http.Header{}
		SetRetryAfter(h, d)
		if got := h.Get("Retry-After"); got != want {
			t.Errorf("%v: Retry-After %q, want %q", d, got, want)
		}
	}
}
