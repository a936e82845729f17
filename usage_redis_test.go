package apikey

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/usage"
)

// redisUsage is the cluster's usage count of a key as Redis holds it (the
// sums every instance added), read from Redis itself, not through Caddy;
// -1 when Redis does not answer.
func redisUsage(t *testing.T, addr, keyID string) int64 {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer client.Close()
	now := time.Now()
	rows, err := usage.NewCluster(client, ratelimit.DefaultRedisKeyPrefix, usage.DefaultRetention).
		Report(context.Background(), usage.Query{KeyID: keyID, From: now.Add(-48 * time.Hour), To: now.Add(time.Hour)})
	if err != nil {
		return -1
	}
	var n int64
	for _, r := range rows {
		n += r.Requests
	}
	return n
}

// fileUsage is a key's requests as the usage file holds them.
func fileUsage(path, keyID string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var f struct {
		Counts []struct {
			KeyID    string `json:"key_id"`
			Requests int64  `json:"requests"`
		} `json:"counts"`
	}
	if json.Unmarshal(data, &f) != nil {
		return 0
	}
	var n int64
	for _, c := range f.Counts {
		if c.KeyID == keyID {
			n += c.Requests
		}
	}
	return n
}

// TestUsageCountedDuringAnOutageReachesRedisOnce: an instance counts 50
// requests with Redis up and 80 while it is down, then stops (SIGTERM, or
// kill -9 once its usage file holds the 80), and starts again once Redis
// is back: Redis holds 130 for the key, and still 130 (plus what came
// after) once the instance restarted a second time. Under -short only the
// kill -9 stop runs: it loses what was not saved, the harder of the two.
func TestUsageCountedDuringAnOutageReachesRedisOnce(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	stops := []string{"SIGTERM", "kill -9"}
	if testing.Short() {
		stops = stops[1:]
	}
	for _, stop := range stops {
		t.Run(strings.ReplaceAll(stop, " ", ""), func(t *testing.T) {
			srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always")
			keyID := "k_outage_restart_" + strings.TrimPrefix(strings.ReplaceAll(stop, " ", ""), "-")
			key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: keyID, Role: "reader"})
			usageFile := filepath.Join(t.TempDir(), "usage.json")
			port := gatewaytest.Port(t)
			cfg := fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		usage_file %s
		usage_save_interval 200ms
		failed_auth_limit off
		counters redis {
			address %s
			timeout 2s
		}
	}
	respond ok
}`, port, gatewaytest.WriteKeyFile(t, key.Record), usageFile, srv.Addr())
			url := fmt.Sprintf("http://127.0.0.1:%d/v1/x", port)
			requests := func(n int) {
				t.Helper()
				for range n {
					if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 200 {
						t.Fatalf("request: %d", r.Status)
					}
				}
			}
			inRedis := func() int64 { return redisUsage(t, srv.Addr(), keyID) }

			cmd := gatewaytest.StartProcess(t, cfg)
			requests(50)
			gatewaytest.WaitUntil(t, "50 requests in redis", 30*time.Second, func() bool { return inRedis() == 50 })
			srv.Kill()
			requests(80)
			if stop == "SIGTERM" {
				cmd.Process.Signal(syscall.SIGTERM)
			} else {
				// kill -9 loses what was counted since the last save: wait
				// for the save that holds the 80.
				gatewaytest.WaitUntil(t, "the usage file holds 130", 30*time.Second, func() bool { return fileUsage(usageFile, keyID) == 130 })
				cmd.Process.Kill()
			}
			cmd.Wait()
			srv.Restart() // its data kept: appendonly
			if n := inRedis(); n != 50 {
				t.Fatalf("redis after its restart: %d, want the 50 counted before the outage", n)
			}

			cmd = gatewaytest.StartProcess(t, cfg)
			gatewaytest.WaitUntil(t, "the 80 counted during the outage in redis", 30*time.Second, func() bool { return inRedis() >= 130 })
			if n := inRedis(); n != 130 {
				t.Fatalf("redis holds %d, want 130", n)
			}

			// Once: a second restart adds nothing again; a request after it
			// goes up behind whatever the file still held.
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			gatewaytest.StartProcess(t, cfg)
			requests(1)
			gatewaytest.WaitUntil(t, "the request after the second restart in redis", 30*time.Second, func() bool { return inRedis() >= 131 })
			if n := inRedis(); n != 131 {
				t.Fatalf("redis holds %d after a second restart and one request, want 131", n)
			}
		})
	}
}

// TestReloadToAnotherRedisMovesUsage: a reload that moves the counters from
// one Redis to another moves the usage sums and /apikey/usage with them,
// and closes this Caddy's connections to the first Redis, whose end then
// goes unnoticed.
func TestReloadToAnotherRedisMovesUsage(t *testing.T) {
	r1, r2 := redistest.Start(t), redistest.Start(t)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_reload_redis", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	usageFile := filepath.Join(t.TempDir(), "usage.json")
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	cfg := func(redisAddr string) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	header X-Counters "redis %[5]s"
	apikey {
		keys file %[3]s
		usage_file %[4]s
		usage_save_interval 200ms
		failed_auth_limit off
		counters redis {
			address %[5]s
			timeout 2s
		}
	}
	respond ok
}`, adminPort, port, keyFile, usageFile, redisAddr)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/x", port)
	requests := func(n int) {
		t.Helper()
		for range n {
			if r := gatewaytest.Send(t, "GET", url, key.Bearer()...); r.Status != 200 {
				t.Fatalf("request: %d", r.Status)
			}
		}
	}
	gatewaytest.Start(t, cfg(r1.Addr()))
	requests(3)
	gatewaytest.WaitUntil(t, "3 requests in redis 1", 30*time.Second, func() bool { return redisUsage(t, r1.Addr(), key.Record.ID) == 3 })

	if err := gatewaytest.Load(cfg(r2.Addr())); err != nil {
		t.Fatal(err)
	}
	// Caddy stops the old config's servers after the reload: for a moment
	// one may still take a connection and count on redis 1. A request
	// without a key counts nowhere: send those until the new config answers
	// one; the counted requests then go on its kept-alive connection.
	gatewaytest.WaitUntil(t, "the new config in force", 10*time.Second, func() bool {
		r := gatewaytest.Send(t, "GET", url)
		if r.Status != 401 {
			t.Fatalf("a request without a key: %d", r.Status)
		}
		return r.Header.Get("X-Counters") == "redis "+r2.Addr()
	})
	requests(4)
	gatewaytest.WaitUntil(t, "the 4 requests after the reload in redis 2", 30*time.Second, func() bool {
		return redisUsage(t, r2.Addr(), key.Record.ID) >= 4
	})
	if n1, n2 := redisUsage(t, r1.Addr(), key.Record.ID), redisUsage(t, r2.Addr(), key.Record.ID); n1 != 3 || n2 != 4 {
		t.Fatalf("redis 1 holds %d, redis 2 %d; want 3 and 4", n1, n2)
	}
	if n := usageTotal(t, admin, key.Record.ID); n != 4 {
		t.Errorf("/apikey/usage answers %d, want redis 2's 4", n)
	}

	// No connection from this Caddy left on redis 1: every client it lists
	// but the one asking.
	probe := redis.NewClient(&redis.Options{Addr: r1.Addr(), PoolSize: 1, ClientName: "test-probe"})
	defer probe.Close()
	others := func() int {
		list, err := probe.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			if line != "" && !strings.Contains(line, " name=test-probe ") {
				n++
			}
		}
		return n
	}
	gatewaytest.WaitUntil(t, "caddy's connections to redis 1 closed", 10*time.Second, func() bool { return others() == 0 })

	r1.Kill()
	requests(2)
	status, body := gatewaytest.Admin(t, "GET", admin, "/apikey/usage?key="+key.Record.ID)
	if status != 200 {
		t.Fatalf("/apikey/usage with redis 1 stopped: %d %s", status, body)
	}
	if n := usageTotal(t, admin, key.Record.ID); n != 6 {
		t.Errorf("/apikey/usage answers %d, want 6", n)
	}
}
