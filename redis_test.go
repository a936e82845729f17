package apikey

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

func redisSite(port int, keyFile, redisAddr, upstream, redisExtra string) string {
	return gatewaytest.Site{Port: port, KeyFile: keyFile, CountersRedis: redisAddr, CountersOptions: redisExtra,
		Apikey: "failed_auth_limit off", Handler: "reverse_proxy " + upstream}.Caddyfile()
}

// TestTwoInstancesShareOneBudget runs examples/redis/Caddyfile twice, as two
// Caddy processes on one Redis: the demo reader (100 requests a day) gets
// exactly 100 passes in all under concurrent load across both.
func TestTwoInstancesShareOneBudget(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	const quota, requests = 100, 250
	srv := redistest.Start(t)
	cfg, err := os.ReadFile("examples/redis/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	ports := []int{gatewaytest.Port(t), gatewaytest.Port(t)}
	for _, port := range ports {
		// A generous timeout: this test is about exactness, and a call that
		// times out under -race on two cores would count locally instead.
		gatewaytest.StartProcess(t, string(cfg), "PORT="+strconv.Itoa(port), "ADMIN_PORT="+strconv.Itoa(gatewaytest.Port(t)),
			"REDIS="+srv.Addr(), "REDIS_TIMEOUT=2s")
	}

	statuses := gatewaytest.Burst(requests, func(i int) *http.Request {
		port := ports[i%2]
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/tags", port), nil)
		req.Host = fmt.Sprintf("localhost:%d", port)
		req.Header.Set("X-API-Key", demoReader)
		return req
	})
	codes := gatewaytest.Tally(statuses)
	answered := map[int]int{}
	for i, s := range statuses {
		if s > 0 {
			answered[ports[i%2]]++
		}
	}
	if codes[200] != quota || codes[429] != requests-quota {
		t.Fatalf("across two instances: %v, want %d×200 and %d×429", codes, quota, requests-quota)
	}
	if answered[ports[0]] != requests/2 || answered[ports[1]] != requests/2 {
		t.Errorf("each instance should have answered %d requests: %v", requests/2, answered)
	}
	// Both instances report the same state from Redis.
	for _, port := range ports {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/tags", port), nil)
		req.Host = fmt.Sprintf("localhost:%d", port)
		req.Header.Set("X-API-Key", demoReader)
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("X-RateLimit-Remaining") != "0" {
			t.Errorf("instance on %d: %d, remaining %q", port, resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"))
		}
	}
}

// TestRedisOutageThroughCaddy kills and freezes Redis under live traffic
// for each on_failure mode: the units of the lease held spent first, then
// the stated behaviour, no request hanging past the timeout plus a margin,
// and counting back in Redis once it returns. Under -short, each mode
// meets one outage (local and open a frozen Redis, closed a killed one).
func TestRedisOutageThroughCaddy(t *testing.T) {
	const timeout = 100 * time.Millisecond
	// The background clients send requests throughout each outage, held
	// at least outageAtLeast: one that waited on Redis until it came back
	// would take longer than timeout+margin; one slowed by -race on two
	// loaded cores does not (715ms was seen with a 400ms margin).
	const margin = 1500 * time.Millisecond
	const outageAtLeast = 2 * time.Second
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	up := gatewaytest.NewUpstream(t)

	for i, mode := range []string{"local", "closed", "open"} {
		t.Run(mode, func(t *testing.T) {
			// The dev default, 5,000 a day; on_failure local gets a quota the
			// background clients cannot spend during the outage (on an idle
			// machine they sent over 5,000 requests in it, and the key's 429
			// once back in Redis was taken for a failure to resume).
			quota := int64(5000)
			if mode == "local" {
				quota = 1_000_000
			}
			leaseCap := min(1000, quota/100) // ratelimit's leaseCap
			key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_outage_" + mode, Role: "reader", QuotaPerDay: int64p(quota)})
			warm := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_warm_" + mode, Role: "reader"})
			port := gatewaytest.Port(t)
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			cfg := strings.Replace(redisSite(port, gatewaytest.WriteKeyFile(t, key.Record, warm.Record), srv.Addr(), up.Addr(),
				fmt.Sprintf("timeout %v\n\t\t\ton_failure %s", timeout, mode)),
				"persist_config off", "persist_config off\n\tlog {\n\t\toutput file "+logPath+"\n\t}", 1)
			gatewaytest.Start(t, cfg)
			url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
			redisCount := func() string {
				v, _ := rc.HGet(context.Background(), ratelimit.RedisKey(ratelimit.DefaultRedisKeyPrefix, key.Record.ID), "n").Result()
				return v
			}

			// The first requests dial Redis and load the script: on a loaded
			// machine that can take longer than the timeout. Another key
			// warms the connections until Redis counts in time.
			gatewaytest.WaitUntil(t, "Redis answering within the timeout", 30*time.Second, func() bool {
				gatewaytest.Send(t, "GET", url, warm.Bearer()...)
				n, _ := rc.HGet(context.Background(), ratelimit.RedisKey(ratelimit.DefaultRedisKeyPrefix, warm.Record.ID), "n").Result()
				return n != ""
			})
			if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != strconv.FormatInt(quota-1, 10) {
				t.Fatalf("before the outage: %d, remaining %q", r.Status, r.Header.Get("X-RateLimit-Remaining"))
			}
			if redisCount() != "1" {
				t.Fatalf("not counted in redis: %q", redisCount())
			}

			outages := []string{"frozen", "killed"}
			if testing.Short() {
				// -short: one outage a mode, the three modes between them
				// meeting a frozen and a killed Redis.
				outages = outages[i%2 : i%2+1]
			}
			for o, outage := range outages {
				// Traffic from other clients all through the outage.
				stop := make(chan struct{})
				var bg sync.WaitGroup
				var slow atomic.Int64
				for c := 0; c < 4; c++ {
					bg.Add(1)
					go func() {
						defer bg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							began := time.Now()
							req, _ := http.NewRequest("GET", url, nil)
							req.Header.Set("Authorization", "Bearer "+key.Secret)
							if resp, err := gatewaytest.Client.Do(req); err == nil {
								resp.Body.Close()
							}
							if time.Since(began) > timeout+margin {
								slow.Add(1)
							}
						}
					}()
				}
				if outage == "frozen" {
					srv.Freeze()
				} else {
					srv.Kill()
				}
				outageBegan := time.Now()
				// The instance first spends the units of the lease it holds
				// (fewer than 50 here), counted: then on_failure applies.
				if mode == "local" {
					// Nothing shows the switch to local counting: wait for
					// the background traffic to spend the lease (up to
					// 1,000 units: 7 s and more under -race on two loaded
					// cores) and the instance to mark Redis down.
					gatewaytest.WaitForLogCountWithin(t, logPath, "redis is failing", o+1, 60*time.Second)
				} else {
					for spent := 0; ; spent++ {
						began := time.Now()
						r := gatewaytest.Send(t, "GET", url, key.Bearer()...)
						if took := time.Since(began); took > timeout+margin {
							t.Errorf("%s: a request took %v", outage, took)
						}
						if r.Status != 200 || r.Header.Get("RateLimit") == "" {
							break
						}
						if spent == 50 {
							t.Fatalf("%s: %s: still counting after the lease should be spent", outage, mode)
						}
					}
				}
				for i := 0; i < 5; i++ {
					began := time.Now()
					r := gatewaytest.Send(t, "GET", url, key.Bearer()...)
					if took := time.Since(began); took > timeout+margin {
						t.Errorf("%s: a request took %v", outage, took)
					}
					switch mode {
					case "local":
						if r.Status != 200 || r.Header.Get("X-RateLimit-Limit") != strconv.FormatInt(quota, 10) {
							t.Errorf("%s: local: %d, limit header %q", outage, r.Status, r.Header.Get("X-RateLimit-Limit"))
						}
					case "closed":
						if r.Status != 503 || r.Err.Code != "unavailable" || r.Header.Get("Retry-After") == "" {
							t.Errorf("%s: closed: %d %q", outage, r.Status, r.Err.Code)
						}
					case "open":
						if r.Status != 200 || r.Header.Get("RateLimit") != "" {
							t.Errorf("%s: open: %d, RateLimit %q (want none: uncounted)", outage, r.Status, r.Header.Get("RateLimit"))
						}
					}
				}
				// Long enough that a request waiting on Redis throughout
				// would show past timeout+margin.
				for time.Since(outageBegan) < outageAtLeast {
					time.Sleep(50 * time.Millisecond)
				}
				close(stop)
				bg.Wait()
				if n := slow.Load(); n > 0 {
					t.Errorf("%s: %d background requests took over %v", outage, n, timeout+margin)
				}
				if outage == "frozen" {
					srv.Thaw()
				} else {
					srv.Restart()
				}
				// Back in Redis once the prober sees it answer: the answer's
				// remaining count is Redis's, less the units of the lease
				// this instance holds unspent (fewer than leaseCap, 50 for
				// 5,000, 1,000 for 1,000,000), where a local count during
				// the outage is below it.
				inRedis := func() bool {
					r := gatewaytest.Send(t, "GET", url, key.Bearer()...)
					n, _ := strconv.ParseInt(redisCount(), 10, 64)
					rem, err := strconv.ParseInt(r.Header.Get("X-RateLimit-Remaining"), 10, 64)
					return r.Status == 200 && err == nil && rem >= quota-n && rem < quota-n+leaseCap
				}
				// Two answers in a row, so that one lucky count is not taken
				// for the switch back.
				eventually(t, mode+": counting resumes in redis after "+outage, func() bool {
					first := inRedis()
					return first && inRedis()
				})
			}
			logs := gatewaytest.WaitForLogCount(t, logPath, "redis answers again", len(outages))
			// Once per outage, give or take a stray timeout under -race:
			// never once per failed request.
			if n := strings.Count(logs, "redis is failing"); n < len(outages) || n > 2*len(outages) {
				t.Errorf("the switch was logged %d times for %d outages, want %d", n, len(outages), len(outages))
			}
		})
	}
}

// TestForbiddenAsksRedisNothing: a 403 to an authenticated key carries the
// key's rate-limit headers as this instance last saw them, with no Redis
// call: a key flooding forbidden requests costs Redis nothing. A key this
// instance has not counted yet gets its 403 without the headers.
func TestForbiddenAsksRedisNothing(t *testing.T) {
	srv := redistest.Start(t)
	up := gatewaytest.NewUpstream(t)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_forbidden_redis", Role: "reader", QuotaPerDay: int64p(5)})
	fresh := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_forbidden_fresh", Role: "reader", QuotaPerDay: int64p(5)})
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, redisSite(port, gatewaytest.WriteKeyFile(t, key.Record, fresh.Record), srv.Addr(), up.Addr(), "timeout 2s"))
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)

	probe := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer probe.Close()
	scripts := func() int64 {
		stats, err := probe.Info(context.Background(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, line := range strings.Split(stats, "\n") {
			for _, cmd := range []string{"cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_fcall:"} {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
					calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
					c, _ := strconv.ParseInt(calls, 10, 64)
					n += c
				}
			}
		}
		return n
	}

	counted := time.Now() // the key's lease is last used by this GET
	if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("GET: %d, remaining %q", r.Status, r.Header.Get("X-RateLimit-Remaining"))
	}
	before := scripts()
	for range 20 {
		if r := gatewaytest.Send(t, "POST", url, key.Bearer()...); r.Status != 403 || r.Header.Get("X-RateLimit-Remaining") != "4" {
			t.Fatalf("POST by a reader: %d, remaining %q", r.Status, r.Header.Get("X-RateLimit-Remaining"))
		}
	}
	if r := gatewaytest.Send(t, "POST", url, fresh.Bearer()...); r.Status != 403 || r.Header.Get("X-RateLimit-Remaining") != "" {
		t.Errorf("POST by a reader this instance never counted: %d, remaining %q", r.Status, r.Header.Get("X-RateLimit-Remaining"))
	}
	// A lease unused for 2 s goes back to Redis (one script, the sweeper's,
	// not a request's): allowed once when the requests took that long on a
	// loaded machine. A 403 that asked Redis would run 21.
	idle := time.Since(counted)
	if n := scripts() - before; n != 0 && (n != 1 || idle < 2*time.Second) {
		t.Errorf("21 forbidden requests ran %d scripts on Redis in %v, want none (one, the lease's return, after 2 s)", n, idle.Round(time.Millisecond))
	}
}
