package apikey

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

func int64p(n int64) *int64 { return &n }

// quotaSite is a Caddyfile with two apikey routes (two services) in front of
// one upstream, counters in their own file, and extra apikey settings.
func quotaSite(port int, keyFile, countersFile, upstream, extra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}
http://127.0.0.1:%[1]d {
	handle_path /ollama/* {
		apikey {
			keys file %[2]s
			service ollama
			counters memory {
				file %[3]s
			}
			%[5]s
		}
		reverse_proxy %[4]s
	}
	handle_path /n8n/* {
		apikey {
			keys file %[2]s
			service n8n
			counters memory {
				file %[3]s
			}
			%[5]s
		}
		reverse_proxy %[4]s
	}
}`, port, keyFile, countersFile, upstream, extra)
}

type quotaGateway struct {
	url, caddyfile, counters string
	up                       *gatewaytest.Upstream
}

func startQuotaGateway(t *testing.T, extra string, records ...keystore.Record) *quotaGateway {
	t.Helper()
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(t.TempDir(), "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.caddyfile = quotaSite(port, gatewaytest.WriteKeyFile(t, records...), g.counters, g.up.Addr(), extra)
	gatewaytest.Start(t, g.caddyfile)
	return g
}

func nextUTCMidnight(now time.Time) time.Time {
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

// TestQuotaHeadersAndExhaustion: headers on every counted response, 429
// quota_exceeded with Retry-After at the end, and refusals spend nothing.
func TestQuotaHeadersAndExhaustion(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_q3", Role: "reader", Services: []string{"ollama"}, QuotaPerDay: int64p(3)})
	g := startQuotaGateway(t, "", key.Record)
	reset := nextUTCMidnight(time.Now())

	for i := 1; i <= 3; i++ {
		r := gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", key.Bearer()...)
		if r.Status != 200 {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
		if got := r.Header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(3-i) {
			t.Errorf("request %d: X-RateLimit-Remaining %q", i, got)
		}
		if got := r.Header.Get("X-RateLimit-Limit"); got != "3" {
			t.Errorf("X-RateLimit-Limit %q", got)
		}
		if got := r.Header.Get("X-RateLimit-Reset"); got != strconv.FormatInt(reset.Unix(), 10) {
			t.Errorf("X-RateLimit-Reset %q, want %d", got, reset.Unix())
		}
		if got := r.Header.Get("RateLimit-Policy"); got != `"daily";q=3;w=86400` {
			t.Errorf("RateLimit-Policy %q", got)
		}
		if got := r.Header.Get("RateLimit"); !strings.HasPrefix(got, fmt.Sprintf(`"daily";r=%d;t=`, 3-i)) {
			t.Errorf("RateLimit %q", got)
		}
		if i == 2 {
			// 403s in between spend nothing, and carry the key's
			// rate-limit headers like every authenticated response.
			if r := gatewaytest.Send(t, "POST", g.url+"/ollama/api/chat", key.Bearer()...); r.Status != 403 || r.Header.Get("X-RateLimit-Remaining") != "1" ||
				!strings.HasPrefix(r.Header.Get("RateLimit"), `"daily";r=1;t=`) {
				t.Fatalf("POST by a reader: %d, X-RateLimit-Remaining %q, RateLimit %q", r.Status, r.Header.Get("X-RateLimit-Remaining"), r.Header.Get("RateLimit"))
			}
			if r := gatewaytest.Send(t, "GET", g.url+"/n8n/x", key.Bearer()...); r.Status != 403 {
				t.Fatalf("n8n: %d", r.Status)
			}
		}
	}

	before := g.up.Count()
	r := gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", key.Bearer()...)
	if r.Status != 429 || r.Err.Code != "quota_exceeded" {
		t.Fatalf("4th request: %d %q", r.Status, r.Err.Code)
	}
	if g.up.Count() != before {
		t.Error("a refused request reached the upstream")
	}
	retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if want := time.Until(reset).Seconds(); err != nil || float64(retry) < want-2 || float64(retry) > want+2 {
		t.Errorf("Retry-After %q, want about %.0f", r.Header.Get("Retry-After"), want)
	}
	if !strings.Contains(r.Err.Message, reset.Format(time.RFC3339)) {
		t.Errorf("message %q does not say when the quota resets", r.Err.Message)
	}
	if r.Header.Get("X-RateLimit-Remaining") != "0" || r.Header.Get("RateLimit-Policy") == "" {
		t.Error("a 429 lacks the rate-limit headers")
	}
}

// TestQuotaPrecedenceAndBurst: the key record's quota and rate win over the
// route's, the route's over the defaults; a burst refusal is rate_limited.
func TestQuotaPrecedenceAndBurst(t *testing.T) {
	routeQuota := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_route_quota", Role: "reader", Services: []string{"*"}})
	ownQuota := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_own_quota", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(4)})
	ownRate := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_own_rate", Role: "reader", Services: []string{"*"}, Rate: "2/m"})
	defaults := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_defaults", Role: "reader", Services: []string{"*"}})
	g := startQuotaGateway(t, "quota dev 2/day\n\t\t\trate prod 100/s", routeQuota.Record, ownQuota.Record, ownRate.Record, defaults.Record)

	count := func(k gatewaytest.Key) (passed int, last gatewaytest.Response) {
		for i := 0; i < 6; i++ {
			last = gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", k.Bearer()...)
			if last.Status == 200 {
				passed++
			}
		}
		return passed, last
	}
	if n, _ := count(routeQuota); n != 2 {
		t.Errorf("route quota dev 2/day: %d passed", n)
	}
	if n, _ := count(ownQuota); n != 4 {
		t.Errorf("quota_per_day 4 over the route's 2: %d passed", n)
	}
	n, last := count(ownRate)
	if n != 2 || last.Status != 429 || last.Err.Code != "rate_limited" {
		t.Fatalf("rate 2/m: %d passed, last %d %q", n, last.Status, last.Err.Code)
	}
	if got := last.Header.Get("RateLimit-Policy"); got != `"daily";q=50000;w=86400, "burst";q=2;w=60` {
		t.Errorf("RateLimit-Policy %q", got)
	}
	if retry, _ := strconv.Atoi(last.Header.Get("Retry-After")); retry < 29 || retry > 31 {
		t.Errorf("Retry-After %q, want 30", last.Header.Get("Retry-After"))
	}
	if last.Header.Get("X-RateLimit-Remaining") != "49998" {
		t.Errorf("burst refusals spent daily quota: remaining %q", last.Header.Get("X-RateLimit-Remaining"))
	}
	r := gatewaytest.Send(t, "GET", g.url+"/ollama/api/tags", defaults.Bearer()...)
	if got := r.Header.Get("RateLimit-Policy"); got != `"daily";q=50000;w=86400, "burst";q=100;w=1` {
		t.Errorf("prod defaults with route rate: %q", got)
	}
}

// TestRoutesShareOneBudget: a key spends one quota across services.
func TestRoutesShareOneBudget(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_shared", Role: "reader", Services: []string{"ollama", "n8n"}, QuotaPerDay: int64p(3)})
	g := startQuotaGateway(t, "", key.Record)
	for i, path := range []string{"/ollama/a", "/n8n/b", "/ollama/c"} {
		if r := gatewaytest.Send(t, "GET", g.url+path, key.Bearer()...); r.Status != 200 {
			t.Fatalf("request %d: %d", i+1, r.Status)
		}
	}
	for _, path := range []string{"/n8n/d", "/ollama/e"} {
		if r := gatewaytest.Send(t, "GET", g.url+path, key.Bearer()...); r.Status != 429 {
			t.Errorf("%s after the budget: %d", path, r.Status)
		}
	}
}

// TestQuotaExactUnderConcurrency: with quota N, hundreds of concurrent
// requests get exactly N passes through a real Caddy.
func TestQuotaExactUnderConcurrency(t *testing.T) {
	const quota, requests = 150, 450
	key := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_concurrent", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(quota)})
	g := startQuotaGateway(t, "", key.Record)

	codes := gatewaytest.Tally(gatewaytest.Burst(requests, func(int) *http.Request {
		req, _ := http.NewRequest("GET", g.url+"/ollama/x", nil)
		req.Header.Set("Authorization", "Bearer "+key.Secret)
		return req
	}))
	if codes[200] != quota || codes[429] != requests-quota {
		t.Fatalf("status counts %v, want %d×200 and %d×429", codes, quota, requests-quota)
	}
	if g.up.Count() != quota {
		t.Errorf("the upstream got %d requests, want %d", g.up.Count(), quota)
	}
}

// TestCountsSurviveReload loads a changed config through the admin API and
// keeps counting.
func TestCountsSurviveReload(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_reload", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(5)})
	adminPort := gatewaytest.Port(t)
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(t.TempDir(), "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	site := func(extra string) string {
		return strings.Replace(quotaSite(port, keyFile, g.counters, g.up.Addr(), extra),
			"admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	}
	gatewaytest.Start(t, site(""))

	for i := 0; i < 3; i++ {
		if r := gatewaytest.Send(t, "GET", g.url+"/ollama/x", key.Bearer()...); r.Status != 200 {
			t.Fatalf("before reload: %d", r.Status)
		}
	}
	// A real change: the new config sets a burst rate on every route.
	cfg, err := gatewaytest.Config(site("rate dev 100/s"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gatewaytest.Client.Post(fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), "application/json", bytes.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin /load: %d", resp.StatusCode)
	}
	gatewaytest.Client.CloseIdleConnections() // the old server closed them (see gatewaytest.Load)
	// Caddy stops the old config's servers after /load has answered: for a
	// moment one may still take a connection. Whichever config answers,
	// the count goes on from 3.
	r := gatewaytest.Send(t, "GET", g.url+"/ollama/x", key.Bearer()...)
	if r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("after reload: %d, remaining %q (want 1: the reload kept the count)", r.Status, r.Header.Get("X-RateLimit-Remaining"))
	}
	gatewaytest.Send(t, "GET", g.url+"/n8n/x", key.Bearer()...)
	// The quota is spent: every request after it is refused, and once the
	// old servers are gone, the answer is the new config's (its burst rate
	// in RateLimit-Policy; a refusal spends nothing).
	gatewaytest.WaitUntil(t, "the new config in force", 10*time.Second, func() bool {
		r := gatewaytest.Send(t, "GET", g.url+"/ollama/x", key.Bearer()...)
		if r.Status != 429 {
			t.Fatalf("a request after the quota was spent: %d", r.Status)
		}
		return strings.Contains(r.Header.Get("RateLimit-Policy"), `"burst";q=100;w=1`)
	})
}

// TestCountsSurviveRestart stops Caddy and starts it again on the same
// counter file; a corrupt counter file is set aside and Caddy still starts.
func TestCountsSurviveRestart(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_restart", Role: "reader", Services: []string{"*"}, QuotaPerDay: int64p(4)})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/ollama/x", port)
	counters := filepath.Join(t.TempDir(), "counters.json")
	cfg := quotaSite(port, gatewaytest.WriteKeyFile(t, key.Record), counters, up.Addr(), "")

	if err := gatewaytest.Load(cfg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		gatewaytest.Send(t, "GET", url, key.Bearer()...)
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(counters); err != nil || !strings.Contains(string(data), `"k_restart"`) {
		t.Fatalf("counters not saved at shutdown: %v", err)
	}

	gatewaytest.Start(t, cfg)
	r := gatewaytest.Send(t, "GET", url, key.Bearer()...)
	if r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("after restart: %d, remaining %q, want 200 and 0", r.Status, r.Header.Get("X-RateLimit-Remaining"))
	}
	if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 429 {
		t.Fatalf("5th request after restart: %d", r.Status)
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}

	// Corrupt the file: Caddy starts, sets it aside, counts from zero.
	if err := os.WriteFile(counters, []byte(`{"version":1,"counters":{"k_restart":{"count":`), 0o600); err != nil {
		t.Fatal(err)
	}
	gatewaytest.Start(t, cfg)
	if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != "3" {
		t.Fatalf("after a corrupt file: %d, remaining %q, want 200 and 3", r.Status, r.Header.Get("X-RateLimit-Remaining"))
	}
	aside, _ := filepath.Glob(counters + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt file not set aside: %v", aside)
	}
	if data, _ := os.ReadFile(aside[0]); !strings.HasPrefix(string(data), `{"version":1,"counters":{"k_restart"`) {
		t.Error("the set-aside file lost its content")
	}
}

// TestFailedAuthThrottle: after failed_auth_limit failures an address gets
// 429 even with a valid key; other addresses do not; "off" turns it off.
func TestFailedAuthThrottle(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_valid", Role: "reader", Services: []string{"*"}})
	revoked := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_revoked", Role: "reader", Services: []string{"*"}, Revoked: true})
	g := startQuotaGateway(t, "failed_auth_limit 3/m", key.Record, revoked.Record)
	from := func(ip string, h ...string) gatewaytest.Response {
		return gatewaytest.Send(t, "GET", g.url+"/ollama/x", append([]string{"X-Forwarded-For", ip}, h...)...)
	}
	attacker, bystander := "198.51.100.66", "198.51.100.77"

	from(attacker)                                  // missing
	from(attacker, "X-API-Key", "DEV_API_nonsense") // invalid
	from(attacker, "X-API-Key", revoked.Secret)     // revoked
	if r := from(attacker, key.Bearer()...); r.Status != 429 || r.Err.Code != "rate_limited" {
		t.Fatalf("valid key from a throttled address: %d %q", r.Status, r.Err.Code)
	} else if retry, _ := strconv.Atoi(r.Header.Get("Retry-After")); retry < 55 || retry > 60 {
		t.Errorf("Retry-After %q, want the rest of the minute", r.Header.Get("Retry-After"))
	}
	if r := from(bystander, key.Bearer()...); r.Status != 200 {
		t.Errorf("another address: %d", r.Status)
	}
	// 403s are not failed authentications.
	for i := 0; i < 5; i++ {
		gatewaytest.Send(t, "POST", g.url+"/ollama/x", "X-Forwarded-For", bystander, "Authorization", "Bearer "+key.Secret)
	}
	if r := from(bystander, key.Bearer()...); r.Status != 200 {
		t.Errorf("403s throttled an address: %d", r.Status)
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}

	off := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_valid2", Role: "reader", Services: []string{"*"}})
	g = startQuotaGateway(t, "failed_auth_limit off", off.Record)
	for i := 0; i < 30; i++ {
		from(attacker, "X-API-Key", "DEV_API_nonsense")
	}
	if r := from(attacker, off.Bearer()...); r.Status != 200 {
		t.Errorf("failed_auth_limit off still throttles: %d", r.Status)
	}
}

// TestCountersSavedPeriodically: with a short persist_interval the counter
// file follows the traffic while Caddy runs; the default file is in Caddy's
// data directory.
func TestCountersSavedPeriodically(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_periodic", Role: "reader", Services: []string{"*"}})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	counters := filepath.Join(t.TempDir(), "counters.json")
	cfg := strings.Replace(quotaSite(port, gatewaytest.WriteKeyFile(t, key.Record), counters, up.Addr(), ""),
		"file "+counters, "file "+counters+"\n\t\t\t\tpersist_interval 100ms", -1)
	gatewaytest.Start(t, cfg)
	for i := 0; i < 2; i++ {
		gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/ollama/x", port), key.Bearer()...)
	}
	// A save may come between the two requests (one came there under
	// -race on two loaded cores): wait for the one that counts both.
	var data []byte
	gatewaytest.WaitUntil(t, "the counter file counting k_periodic's 2 requests", 5*time.Second, func() bool {
		data, _ = os.ReadFile(counters)
		return strings.Contains(string(data), `"k_periodic":{"window_start":`) && strings.Contains(string(data), `"count":2`)
	})
	if strings.Count(string(data), `"count":`) != 1 {
		t.Errorf("saved counters %s, want k_periodic's alone", data)
	}
}

func TestCountersDefaultFileInDataDir(t *testing.T) {
	// An id of its own on every run: the data directory is the process's.
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_default_file_" + strconv.FormatInt(time.Now().UnixNano(), 36), Role: "reader"})
	port := gatewaytest.Port(t)
	cfg := fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
	}
	respond "ok"
}`, port, gatewaytest.WriteKeyFile(t, key.Record))
	if err := gatewaytest.Load(cfg); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	gatewaytest.Send(t, "GET", url, key.Bearer()...)
	gatewaytest.Send(t, "GET", url, key.Bearer()...)
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(os.Getenv("XDG_DATA_HOME"), "caddy", "apikey", "counters.json")
	if data, err := os.ReadFile(path); err != nil || !strings.Contains(string(data), `"`+key.Record.ID+`"`) {
		t.Fatalf("default counter file %s: %v", path, err)
	}
	// Started again on the same data directory, the count goes on.
	gatewaytest.Start(t, cfg)
	if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Header.Get("X-RateLimit-Remaining") != "4997" {
		t.Errorf("after a restart on the same data directory: remaining %q, want 4997", r.Header.Get("X-RateLimit-Remaining"))
	}
}

// TestHalfProvisionedHandlerLetsGo: a config that fails after the handler
// took the shared failed-auth tracker gives it back.
func TestHalfProvisionedHandlerLetsGo(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_half", Role: "reader"})
	cfg := fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {
		"listen": ["127.0.0.1:%d"],
		"routes": [{"handle": [{"handler": "apikey",
			"keys": {"source": "file", "path": %q},
			"counters": {"store": "memory", "persist_interval": -1}}]}]}}}}}`, gatewaytest.Port(t), gatewaytest.WriteKeyFile(t, key.Record))
	err := gatewaytest.LoadJSON([]byte(cfg))
	if err == nil || !strings.Contains(err.Error(), "persist_interval must be positive") {
		t.Fatalf("load: %v", err)
	}
	if n, ok := app.References(failuresPoolKey(defaultFailedAuthLimit.Period)); ok || n != 0 {
		t.Errorf("the failed config still holds the failed-auth tracker (%d references)", n)
	}
}

func TestLoggedPathMasksKeys(t *testing.T) {
	key := "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl"
	for in, want := range map[string]string{
		"/echo/" + key + "/x":           "/echo/[key]/x",
		"/echo/" + strings.ToLower(key): "/echo/[key]",
		"/a/prod_api_ABC?x":             "/a/[key]?x",
		"/plain/path":                   "/plain/path",
		"/my_api_docs":                  "/my_api_docs",
		"/" + key + key:                 "/[key][key]",
	} {
		if got := loggedPath(in); got != want {
			t.Errorf("loggedPath(%q) = %q, want %q", strings.ReplaceAll(in, key, "<key>"), got, want)
		}
	}
}

// TestThrottlePeriodsKeepTheirOwnWindows: a route with a per-second limit
// must not restart the window of a route with a per-minute limit.
func TestThrottlePeriodsKeepTheirOwnWindows(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_periods", Role: "reader"})
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%[1]d {
	handle_path /minute/* {
		apikey {
			keys file %[2]s
			failed_auth_limit 10/m
		}
		reverse_proxy %[3]s
	}
	handle_path /second/* {
		apikey {
			keys file %[2]s
			failed_auth_limit 1000/s
		}
		reverse_proxy %[3]s
	}
}`, port, keyFile, up.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := range 10 {
		if i == 5 {
			// Past the per-second window: a failure on /second would
			// have restarted a window shared by both routes.
			time.Sleep(1100 * time.Millisecond)
			gatewaytest.Send(t, "GET", base+"/second/x")
		}
		if r := gatewaytest.Send(t, "GET", base+"/minute/x"); r.Status != 401 {
			t.Fatalf("failure %d: %d", i+1, r.Status)
		}
	}
	if r := gatewaytest.Send(t, "GET", base+"/minute/x", key.Bearer()...); r.Status != 429 || r.Err.Code != decisionRateLimited {
		t.Errorf("after 10 failures in a minute: %d %s, want 429 rate_limited", r.Status, r.Err.Code)
	}
	if r := gatewaytest.Send(t, "GET", base+"/second/x", key.Bearer()...); r.Status != 200 {
		t.Errorf("the per-second route: %d, want 200", r.Status)
	}
}

// TestFailedAuthThrottlesWideNetworks: a client with many addresses, each
// under failed_auth_limit (many /64s of one IPv6 /48, many IPv4 addresses
// of one /16, through trusted_proxies), is throttled on its network once
// failed_auth_prefix_limit is reached: a valid key from another address of
// that network gets 429, one from elsewhere does not. Its refusals write
// at most the interval's budget of lines.
func TestFailedAuthThrottlesWideNetworks(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_wide", Role: "reader", Services: []string{"*"}})
	dir := t.TempDir()
	logPath := filepath.Join(dir, "caddy.log")
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(dir, "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := quotaSite(port, gatewaytest.WriteKeyFile(t, key.Record), g.counters, g.up.Addr(), "failed_auth_limit 5/m\n\t\t\tfailed_auth_prefix_limit 50/m /16 /48")
	cfg = strings.Replace(cfg, "persist_config off", "persist_config off\n\tlog {\n\t\toutput file "+logPath+"\n\t\tformat json\n\t}", 1)
	gatewaytest.Start(t, cfg)
	from := func(ip string, h ...string) gatewaytest.Response {
		return gatewaytest.Send(t, "GET", g.url+"/ollama/x", append([]string{"X-Forwarded-For", ip}, h...)...)
	}

	for _, c := range []struct {
		name            string
		attacker        func(i int) string
		neighbour, away string
	}{
		{"IPv6 /64s of one /48", func(i int) string { return fmt.Sprintf("2001:db8:7:%x::1", i) }, "2001:db8:7:ffff::9", "2001:db8:8::1"},
		{"IPv4 addresses of one /16", func(i int) string { return fmt.Sprintf("10.7.%d.%d", i/200, i%200+1) }, "10.7.250.250", "10.8.0.1"},
	} {
		var throttled int
		for i := range 120 {
			if r := from(c.attacker(i), "X-API-Key", "DEV_API_nonsense"); r.Status == 429 && r.Err.Code == "rate_limited" {
				throttled++
			}
		}
		if throttled != 70 {
			t.Errorf("%s: %d of 120 failures from distinct addresses throttled, want the 70 after the network's 50", c.name, throttled)
		}
		if r := from(c.neighbour, key.Bearer()...); r.Status != 429 {
			t.Errorf("%s: a valid key from the throttled network got %d, want 429", c.name, r.Status)
		}
		if r := from(c.away, key.Bearer()...); r.Status != 200 {
			t.Errorf("%s: a valid key from another network got %d, want 200", c.name, r.Status)
		}
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}
	var denied, throttledLines int
	for _, l := range jsonLines(t, logPath) {
		switch l["msg"] {
		case "request denied":
			denied++
		case "client address throttled after failed authentications":
			throttledLines++
			if l["client"] != "2001:db8:7::/48" && l["client"] != "10.7.0.0/16" {
				t.Errorf("throttled %v, want the /48 or the /16", l["client"])
			}
		}
	}
	if denied > anonPerInterval || throttledLines != 2 {
		t.Errorf("%d request denied lines (want at most %d), %d throttle lines (want 2)", denied, anonPerInterval, throttledLines)
	}
}
