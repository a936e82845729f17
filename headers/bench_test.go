package headers

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/ratelimit"
)

func BenchmarkTakeKey(b *testing.B) {
	locs := make([]KeyLocation, len(DefaultKeyLocations))
	for i, l := range DefaultKeyLocations {
		locs[i], _ = l.Canonical()
	}
	h := http.Header{}
	auth := []string{"Bearer " + testKey}
	b.ReportAllocs()
	for b.Loop() {
		h["Authorization"] = auth
		if _, ok := TakeKey(h, locs); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkWriteRateLimit(b *testing.B) {
	now := time.Now()
	res := ratelimit.Result{
		Daily: ratelimit.Usage{Limit: 5000, Remaining: 4999, Reset: now.Add(time.Hour), Window: 24 * time.Hour},
		Burst: ratelimit.Usage{Limit: 10, Remaining: 9, Reset: now.Add(100 * time.Millisecond), Window: time.Second},
	}
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		WriteRateLimit(h, res, now)
	}
}

func BenchmarkCredentialApply(b *testing.B) {
	p, err := Credential{Header: "Authorization", Value: "Bearer upstream-token"}.Prepare()
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{}
	repl := caddy.NewReplacer()
	b.ReportAllocs()
	for b.Loop() {
		p.Apply(h, repl)
	}
}
