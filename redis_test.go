package apikey

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

var (
	caddyBinOnce sync.Once
	caddyBin     string
	caddyBinErr  error
)

// builtCaddy builds cmd/caddy once per test run.
func builtCaddy(t *testing.T) string {
	t.Helper()
	caddyBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caddy-apikey-bin-")
		if err != nil {
			caddyBinErr = err
			return
		}
		caddyBin = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy").CombinedOutput()
		if err != nil {
			caddyBinErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if caddyBinErr != nil {
		t.Fatal(caddyBinErr)
	}
	return caddyBin
}

// runCaddyProcess runs the built Caddy on a Caddyfile, from the repository
// root, until the test ends, and waits until it accepts connections on port.
func runCaddyProcess(t *testing.T, caddyfile string, port int, env ...string) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(builtCaddy(t), "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir), env...)
	logFile, _ := os.Create(filepath.Join(dir, "caddy.log"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
		if t.Failed() {
			// The end of Caddy's log, without lines that could hold a
			// key: Caddy's own DEBUG lines are off in these configs.
			log, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			t.Logf("the last lines of the Caddy on port %d:\n%s", port, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 100*time.Millisecond); err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
			t.Fatalf("caddy did not start:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func redisSite(port int, keyFile, redisAddr, upstream, redisExtra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		failed_auth_limit off
		counters redis {
			address %s
			%s
		}
	}
	reverse_proxy %s
}`, port, keyFile, redisAddr, redisExtra, upstream)
}

// TestTwoInstancesShareOneBudget runs examples/redis/Caddyfile twice, as two
// Caddy processes on one Redis: the demo reader (100 requests a day) gets
// exactly 100 passes in all under concurrent load across both.
func TestTwoInstancesShareOneBudget(t *testing.T) {
	const quota, requests = 100, 250
	srv := redistest.Start(t)
	cfg, err := os.ReadFile("examples/redis/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	ports := []int{freePort(t), freePort(t)}
	for _, port := range ports {
		// A generous timeout: this test is about exactness, and a call that
		// times out under -race on two cores would count locally instead.
		runCaddyProcess(t, string(cfg), port, "PORT="+strconv.Itoa(port), "ADMIN_PORT="+strconv.Itoa(freePort(t)),
			"REDIS="+srv.Addr(), "REDIS_TIMEOUT=2s")
	}

	statuses := burst(requests, func(i int) *http.Request {
		port := ports[i%2]
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/api/tags", port), nil)
		req.Host = fmt.Sprintf("localhost:%d", port)
		req.Header.Set("X-API-Key", demoReader)
		return req
	})
	codes := tally(statuses)
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
		resp, err := client.Do(req)
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
// and counting back in Redis once it returns.
func TestRedisOutageThroughCaddy(t *testing.T) {
	const timeout = 100 * time.Millisecond
	const margin = 400 * time.Millisecond // -race on two cores
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	up := newUpstream(t)

	for _, mode := range []string{"local", "closed", "open"} {
		t.Run(mode, func(t *testing.T) {
			key := newKey(t, keystore.Dev, keystore.Record{ID: "k_outage_" + mode, Role: "reader"})
			port := freePort(t)
			logPath := filepath.Join(t.TempDir(), "caddy.log")
			cfg := strings.Replace(redisSite(port, writeKeyFile(t, key.record), srv.Addr(), up.addr(),
				fmt.Sprintf("timeout %v\n\t\t\ton_failure %s", timeout, mode)),
				"persist_config off", "persist_config off\n\tlog {\n\t\toutput file "+logPath+"\n\t}", 1)
			startCaddy(t, cfg)
			url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
			redisCount := func() string {
				v, _ := rc.HGet(context.Background(), ratelimit.RedisKey(ratelimit.DefaultRedisKeyPrefix, key.record.ID), "n").Result()
				return v
			}

			if r := send(t, "GET", url, bearer(key)...); r.status != 200 || r.header.Get("X-RateLimit-Remaining") != "4999" {
				t.Fatalf("before the outage: %d, remaining %q", r.status, r.header.Get("X-RateLimit-Remaining"))
			}
			if redisCount() != "1" {
				t.Fatalf("not counted in redis: %q", redisCount())
			}

			for _, outage := range []string{"frozen", "killed"} {
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
							req.Header.Set("Authorization", "Bearer "+key.secret)
							if resp, err := client.Do(req); err == nil {
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
				// The instance first spends the units of the lease it holds
				// (fewer than 50 here), counted: then on_failure applies.
				outages := 1
				if outage == "killed" {
					outages = 2
				}
				if mode == "local" {
					// Nothing shows the switch to local counting: wait for
					// the background traffic to spend the lease and the
					// instance to mark Redis down.
					readWhenCount(t, logPath, "redis is failing", outages)
				} else {
					for spent := 0; ; spent++ {
						began := time.Now()
						r := send(t, "GET", url, bearer(key)...)
						if took := time.Since(began); took > timeout+margin {
							t.Errorf("%s: a request took %v", outage, took)
						}
						if r.status != 200 || r.header.Get("RateLimit") == "" {
							break
						}
						if spent == 50 {
							t.Fatalf("%s: %s: still counting after the lease should be spent", outage, mode)
						}
					}
				}
				for i := 0; i < 5; i++ {
					began := time.Now()
					r := send(t, "GET", url, bearer(key)...)
					if took := time.Since(began); took > timeout+margin {
						t.Errorf("%s: a request took %v", outage, took)
					}
					switch mode {
					case "local":
						if r.status != 200 || r.header.Get("X-RateLimit-Limit") != "5000" {
							t.Errorf("%s: local: %d, limit header %q", outage, r.status, r.header.Get("X-RateLimit-Limit"))
						}
					case "closed":
						if r.status != 503 || r.err.Code != "unavailable" || r.header.Get("Retry-After") == "" {
							t.Errorf("%s: closed: %d %q", outage, r.status, r.err.Code)
						}
					case "open":
						if r.status != 200 || r.header.Get("RateLimit") != "" {
							t.Errorf("%s: open: %d, RateLimit %q (want none: uncounted)", outage, r.status, r.header.Get("RateLimit"))
						}
					}
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
				// 5,000), where a local count during the outage is below it.
				inRedis := func() bool {
					r := send(t, "GET", url, bearer(key)...)
					n, _ := strconv.Atoi(redisCount())
					rem, err := strconv.Atoi(r.header.Get("X-RateLimit-Remaining"))
					return r.status == 200 && err == nil && rem >= 5000-n && rem < 5000-n+50
				}
				// Two answers in a row, so that one lucky count is not taken
				// for the switch back.
				eventually(t, mode+": counting resumes in redis after "+outage, func() bool {
					first := inRedis()
					return first && inRedis()
				})
			}
			logs := readWhenCount(t, logPath, "redis answers again", 2)
			// Once per outage, give or take a stray timeout under -race:
			// never once per failed request.
			if n := strings.Count(logs, "redis is failing"); n < 2 || n > 4 {
				t.Errorf("the switch was logged %d times for two outages, want 2", n)
			}
		})
	}
}
