package headers

import (
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// fuzzHeader reads "Name: value" lines into a header, as a client could
// send them.
func fuzzHeader(s string) http.Header {
	h := http.Header{}
	for _, line := range strings.Split(s, "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && name != "" {
			h.Add(name, strings.TrimPrefix(value, " "))
		}
	}
	return h
}

// fuzzLocations reads "Header [Scheme]" lines; invalid ones are left out,
// as the config load refuses them.
func fuzzLocations(s string) []KeyLocation {
	var locs []KeyLocation
	for _, line := range strings.Split(s, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || len(fields) > 2 {
			continue
		}
		loc := KeyLocation{Header: fields[0]}
		if len(fields) == 2 {
			loc.Scheme = fields[1]
		}
		if c, err := loc.Canonical(); err == nil {
			locs = append(locs, c)
		}
	}
	return locs
}

// firstKey is where README.md says the key comes from: the first location
// whose header's value is "<key>", or "<scheme> <key>" with the scheme in
// any case, the key trimmed of spaces and not empty.
func firstKey(h http.Header, locs []KeyLocation) (string, bool) {
	for _, loc := range locs {
		vals := h[loc.Header]
		if len(vals) == 0 {
			continue
		}
		v := vals[0]
		if loc.Scheme != "" {
			n := len(loc.Scheme)
			if len(v) <= n || !strings.EqualFold(v[:n], loc.Scheme) || (v[n] != ' ' && v[n] != '\t') {
				continue
			}
			v = v[n+1:]
		}
		if v = strings.TrimSpace(v); v != "" {
			return v, true
		}
	}
	return "", false
}

// FuzzTakeKey: TakeKey returns the key README.md says it reads, and leaves
// it in no configured key header, whichever header held it and however
// often it was sent; headers that are not key locations stay as they were.
func FuzzTakeKey(f *testing.F) {
	const defaults = "Authorization Bearer\nX-API-Key"
	for _, c := range [][2]string{
		{"Authorization: Bearer DEV_API_k1", defaults},
		{"X-Api-Key: DEV_API_k1\nAuthorization: Bearer DEV_API_k1", defaults},
		{"Authorization: Bearer DEV_API_w\nX-API-Key: DEV_API_r", defaults},
		{"Authorization: bearer   DEV_API_k1  \nX-API-Key: x DEV_API_k1 y", defaults},
		{"Authorization: Basic abc\nX-API-Key: DEV_API_k1", defaults},
		{"Authorization: Bearer\nX-API-Key:  ", defaults},
		{"Authorization: BearerDEV_API_k1", defaults},
		{"X-Api-Key: k\nX-Api-Key: k\nX-Other: k", "X-API-Key\nX-Other-Key Token"},
		{"Proxy-Authorization: Token k\nAuthorization: Token k\nCookie: k", "Proxy-Authorization Token\nauthorization token"},
		{"X-A: k\nX-B: Bearer k\nX-C: k", "X-A\nX-B Bearer\nX-B\nx-a"},
	} {
		f.Add(c[0], c[1])
	}

	f.Fuzz(func(t *testing.T, headerLines, locLines string) {
		h := fuzzHeader(headerLines)
		locs := fuzzLocations(locLines)
		want, wantFound := firstKey(h, locs)
		isLoc := map[string]bool{}
		for _, loc := range locs {
			isLoc[loc.Header] = true
		}
		others := http.Header{}
		for name, vals := range h {
			if !isLoc[name] {
				others[name] = append([]string(nil), vals...)
			}
		}

		key, found := TakeKey(h, locs)
		if found != wantFound || key != want {
			t.Fatalf("TakeKey found %v (a %d-byte key), README.md says %v (%d bytes)", found, len(key), wantFound, len(want))
		}
		if found {
			for _, loc := range locs {
				for _, v := range h[loc.Header] {
					if strings.Contains(v, key) {
						t.Fatalf("the key is still in %s", loc.Header)
					}
				}
			}
		}
		for name, vals := range h {
			if !isLoc[name] && strings.Join(vals, "\n") != strings.Join(others[name], "\n") {
				t.Fatalf("TakeKey changed %s, which is not a key location", name)
			}
		}
		for name := range others {
			if _, ok := h[name]; !ok {
				t.Fatalf("TakeKey removed %s, which is not a key location", name)
			}
		}
	})
}

// fuzzSecret is what {env.APIKEY_FUZZ_SECRET} holds in FuzzCredential.
const fuzzSecret = "fuzz-secret-5f0c9e"

// FuzzCredential: a credential that prepares sets exactly one value in its
// header, replacing the client's, with no line break, its global
// placeholders filled as written; an error never holds the secret a
// placeholder expanded to.
func FuzzCredential(f *testing.F) {
	os.Setenv("APIKEY_FUZZ_SECRET", fuzzSecret)
	os.Unsetenv("APIKEY_FUZZ_UNSET")
	f.Cleanup(func() { os.Unsetenv("APIKEY_FUZZ_SECRET") })
	for _, c := range [][2]string{
		{"Authorization", "Bearer {env.APIKEY_FUZZ_SECRET}"},
		{"X-N8N-API-KEY", "{env.APIKEY_FUZZ_SECRET}"},
		{"Authorization", "Bearer {env.APIKEY_FUZZ_UNSET}"},
		{"Authorization", "{env.APIKEY_FUZZ_UNSET}"},
		{"X-Caller", "{http.apikey.id}/{env.APIKEY_FUZZ_SECRET}"},
		{"X-Lit", `a\{b} {env.APIKEY_FUZZ_SECRET`},
		{"X-Lit", "line\r\nX-Injected: 1"},
		{"Bad Header", "v"}, {"", "v"}, {"X-A", ""}, {"X-A", " "}, {"x-a", "v "},
	} {
		f.Add(c[0], c[1])
	}
	placeholder := "{env.APIKEY_FUZZ_SECRET}"

	f.Fuzz(func(t *testing.T, header, value string) {
		p, err := Credential{Header: header, Value: value}.Prepare()
		if err != nil {
			if strings.Contains(err.Error(), fuzzSecret) && !strings.Contains(value, fuzzSecret) {
				t.Fatalf("the error holds the secret: %v", err)
			}
			return
		}
		name := http.CanonicalHeaderKey(header)
		h := http.Header{name: {"client-value-1", "client-value-2"}}
		repl := caddy.NewReplacer()
		repl.Set("http.apikey.id", "k_fuzz")
		p.Apply(h, repl)
		got := h[name]
		if len(got) != 1 {
			t.Fatalf("%s has %d values", name, len(got))
		}
		if strings.ContainsAny(got[0], "\r\n") {
			t.Fatalf("%s holds a line break", name)
		}
		if got[0] == "client-value-1" && value != "client-value-1" {
			t.Fatalf("the client's %s stayed", name)
		}
		// A value whose only braces are the secret's placeholder comes out
		// as written, with the secret in its place.
		if rest := strings.ReplaceAll(value, placeholder, ""); !strings.ContainsAny(rest, `{}\`) {
			if want := strings.ReplaceAll(value, placeholder, fuzzSecret); got[0] != want {
				t.Fatalf("%s is not the value as written with its placeholder filled (%d bytes, want %d)", name, len(got[0]), len(want))
			}
		}
	})
}

var (
	policyField = regexp.MustCompile(`^"daily";q=(-?\d+);w=(-?\d+)(?:, "burst";q=(-?\d+);w=(-?\d+))?$`)
	usageField  = regexp.MustCompile(`^"daily";r=(-?\d+);t=(\d+)(?:, "burst";r=(-?\d+);t=(\d+))?$`)
)

// FuzzWriteRateLimit: whatever the counts, the rate-limit headers are one
// value each, printable, in the draft's syntax, and say exactly the usage
// they were given (reset times in whole seconds from now, rounded up, never
// negative); headers written earlier stay as they were; Retry-After is at
// least one second and never earlier than asked.
func FuzzWriteRateLimit(f *testing.F) {
	f.Add(int64(100), int64(99), int64(1772409600), int64(86400), int64(0), int64(0), int64(0), int64(0), int64(1500))
	f.Add(int64(5000), int64(0), int64(1772409600), int64(90000), int64(10), int64(3), int64(1500000000), int64(1000000000), int64(0))
	f.Add(int64(-1<<63), int64(-1<<63), int64(-1<<63), int64(-1<<63), int64(1<<63-1), int64(-1<<63), int64(-1<<63), int64(1<<63-1), int64(-1<<63))
	f.Add(int64(1<<63-1), int64(1<<63-1), int64(1<<63-1), int64(1<<63-1), int64(1<<63-1), int64(1<<63-1), int64(1<<63-1), int64(1<<63-1), int64(1<<63-1))

	now := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	f.Fuzz(func(t *testing.T, limit, remaining, resetUnix, window, bLimit, bRemaining, bResetNs, bWindow, retryNs int64) {
		res := ratelimit.Result{
			Daily: ratelimit.Usage{Limit: limit, Remaining: remaining, Reset: time.Unix(resetUnix, 0), Window: time.Duration(window)},
			Burst: ratelimit.Usage{Limit: bLimit, Remaining: bRemaining, Reset: now.Add(time.Duration(bResetNs)), Window: time.Duration(bWindow)},
		}
		h := http.Header{}
		WriteRateLimit(h, res, now)
		written := map[string]string{}
		for _, name := range []string{"Ratelimit-Policy", "Ratelimit", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"} {
			vals := h[name]
			if len(vals) != 1 {
				t.Fatalf("%s has %d values", name, len(vals))
			}
			for _, c := range []byte(vals[0]) {
				if c < 0x20 || c > 0x7e {
					t.Fatalf("%s holds the byte %#x", name, c)
				}
			}
			written[name] = vals[0]
		}
		itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
		wantAfter := func(reset time.Time) string { return itoa(max(Seconds(reset.Sub(now)), 0)) }
		if written["X-Ratelimit-Limit"] != itoa(limit) || written["X-Ratelimit-Remaining"] != itoa(remaining) ||
			written["X-Ratelimit-Reset"] != itoa(res.Daily.Reset.Unix()) {
			t.Fatalf("X-RateLimit-* do not say the daily usage: %v", written)
		}
		burst := bLimit > 0
		p := policyField.FindStringSubmatch(written["Ratelimit-Policy"])
		u := usageField.FindStringSubmatch(written["Ratelimit"])
		if p == nil || u == nil || (p[3] != "") != burst || (u[3] != "") != burst {
			t.Fatalf("not the draft's syntax, or the burst item is wrong: %v", written)
		}
		if p[1] != itoa(limit) || p[2] != itoa(Seconds(res.Daily.Window)) || u[1] != itoa(remaining) || u[2] != wantAfter(res.Daily.Reset) {
			t.Fatalf("the daily item does not say the usage: %v", written)
		}
		if burst && (p[3] != itoa(bLimit) || p[4] != itoa(Seconds(res.Burst.Window)) || u[3] != itoa(bRemaining) || u[4] != wantAfter(res.Burst.Reset)) {
			t.Fatalf("the burst item does not say the usage: %v", written)
		}

		// Writing other headers leaves these as they were.
		WriteRateLimit(http.Header{}, ratelimit.Result{Daily: ratelimit.Usage{Limit: ^limit, Remaining: ^remaining}}, now.Add(time.Hour))
		for name, v := range written {
			if h[name][0] != v {
				t.Fatalf("%s changed when another response's headers were written", name)
			}
		}

		d := time.Duration(retryNs)
		SetRetryAfter(h, d)
		secs, err := strconv.ParseInt(h.Get("Retry-After"), 10, 64)
		if err != nil || secs < 1 || (d > 0 && time.Duration(secs) < d/time.Second) || (d > 0 && d <= time.Duration(secs-1)*time.Second) {
			t.Fatalf("Retry-After is %q for %v", h.Get("Retry-After"), d)
		}
	})
}
