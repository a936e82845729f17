package apikey

// Gateways sharing keys and counters on Redis, through real Caddy
// processes: keys on Redis seen by every instance, the cluster example, quota
// events once per cluster, a Redis Cluster, a reload of the Redis source,
// usage across restarts. (The Redis key store's own behaviour, without
// Caddy, is tested in keystore/rediskeys.)

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// redisKeysSite is one gateway instance with keys and counters on Redis,
// its admin API on adminPort.
func redisKeysSite(port, adminPort int, redisAddr, upstream string) string {
	return gatewaytest.Site{Port: port, AdminPort: adminPort, KeysRedis: redisAddr, CountersRedis: redisAddr, CountersOptions: "timeout 2s",
		Apikey: "cache {\nttl 1m\nstale 1h\n}\nfailed_auth_limit off", Handler: "reverse_proxy " + upstream}.Caddyfile()
}

// apikeyCLI runs the built caddy's apikey command and returns stdout; the
// key, when it prints one, is never put in a failure message.
func apikeyCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, errOut, code := gatewaytest.CLI(t, "", args...)
	if code != 0 {
		return "", fmt.Errorf("caddy apikey %s: exit %d: %s", args[0], code, errOut)
	}
	return strings.TrimSpace(out), nil
}

// TestKeysOnRedisAcrossInstances: two Caddy processes read their keys from
// one redis-server. A key made with the command works on both; revoked
// through one instance's admin API it is refused by the other within a
// second; rotated, its new secret works on both and the old one carries
// Deprecation; with Redis down, a cached key still works and an unknown one
// gets 503, never 401.
func TestKeysOnRedisAcrossInstances(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	srv := redistest.Start(t)
	up := gatewaytest.NewUpstream(t)
	var urls, admins []string
	for range 2 {
		port, admin := gatewaytest.Port(t), gatewaytest.Port(t)
		gatewaytest.StartProcess(t, redisKeysSite(port, admin, srv.Addr(), up.Addr()))
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/v1/models", port))
		admins = append(admins, fmt.Sprintf("http://127.0.0.1:%d", admin))
	}
	key, err := apikeyCLI(t, "new", "--redis", srv.Addr(), "--type", "dev", "--role", "reader", "--id", "k_cluster", "--owner", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := keystore.Check(key); !ok {
		t.Fatal("caddy apikey new printed no key")
	}
	auth := []string{"Authorization", "Bearer " + key}
	for i, u := range urls {
		if r := gatewaytest.Send(t, "GET", u, auth...); r.Status != 200 {
			t.Fatalf("instance %d: the new key got %d", i, r.Status)
		}
	}
	// Listed through the admin API, with its owner and without its hash.
	if code, body := gatewaytest.Admin(t, "GET", admins[1], "/apikey/keys?owner=alice"); code != 200 || !strings.Contains(body, `"id": "k_cluster"`) || strings.Contains(body, "sha256") {
		t.Errorf("listing alice's keys: %d", code)
	}

	// Revoked through instance 0: instance 1 refuses it within a second.
	if code, body := gatewaytest.Admin(t, "POST", admins[0], "/apikey/keys/k_cluster/revoke"); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	revoked := time.Now()
	for {
		r := gatewaytest.Send(t, "GET", urls[1], auth...)
		if r.Status == 401 && r.Err.Code == decisionRevokedKey {
			break
		}
		if time.Since(revoked) > time.Second {
			t.Fatalf("instance 1 still answers %d a second after the revocation", r.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("revocation seen by the other instance after %v", time.Since(revoked).Round(time.Millisecond))

	// A second key, rotated with the command: the new secret works on both
	// at once (the other instance may have cached "unknown" for it), the
	// old one carries Deprecation.
	old, err := apikeyCLI(t, "new", "--redis", srv.Addr(), "--type", "prod", "--role", "writer", "--id", "k_rotating")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		gatewaytest.Send(t, "GET", u, "Authorization", "Bearer "+old)
	}
	fresh, err := apikeyCLI(t, "rotate", "--redis", srv.Addr(), "--id", "k_rotating", "--grace", "1h")
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range urls {
		deadline := time.Now().Add(time.Second)
		for {
			if r := gatewaytest.Send(t, "GET", u, "Authorization", "Bearer "+fresh); r.Status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %d: the rotated key's new secret is not accepted within a second", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if r := gatewaytest.Send(t, "GET", u, "Authorization", "Bearer "+old); r.Status != 200 || r.Header.Get("Deprecation") != "true" {
			t.Errorf("instance %d: the old secret got %d, Deprecation %q", i, r.Status, r.Header.Get("Deprecation"))
		}
	}

	// Redis down: the cached key keeps working; an unknown key is 503.
	srv.Kill()
	unknown := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	for i, u := range urls {
		if r := gatewaytest.Send(t, "GET", u, "Authorization", "Bearer "+fresh); r.Status != 200 {
			t.Errorf("instance %d, Redis down: a cached key got %d", i, r.Status)
		}
		if r := gatewaytest.Send(t, "GET", u, "Authorization", "Bearer "+unknown.Secret); r.Status != 503 {
			t.Errorf("instance %d, Redis down: an uncached key got %d, want 503 (never 401)", i, r.Status)
		}
	}
}

// TestClusterExample runs examples/cluster/Caddyfile twice on one Redis and
// walks through what README.md says: a key made once works on both
// instances, counts one budget, and a revocation on one is refused by both.
func TestClusterExample(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	srv := redistest.Start(t)
	cfg, err := os.ReadFile("examples/cluster/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	var urls, admins []string
	for range 2 {
		port, admin := gatewaytest.Port(t), gatewaytest.Port(t)
		gatewaytest.StartProcess(t, string(cfg), "PORT="+strconv.Itoa(port), "ADMIN_PORT="+strconv.Itoa(admin),
			"REDIS="+srv.Addr(), "REDIS_TIMEOUT=2s")
		urls = append(urls, fmt.Sprintf("http://localhost:%d/ollama/api/tags", port))
		admins = append(admins, fmt.Sprintf("http://localhost:%d", admin))
	}
	out, errOut, code := gatewaytest.CLI(t, "", "new", "--redis", srv.Addr(), "--type", "dev", "--role", "reader",
		"--services", "ollama", "--quota-per-day", "3", "--id", "k_walkthrough")
	if code != 0 {
		t.Fatalf("new: %s", errOut)
	}
	key := strings.TrimSpace(out)
	// Three requests a day in all, on either instance.
	statuses := []int{}
	for i := range 4 {
		statuses = append(statuses, gatewaytest.Send(t, "GET", urls[i%2], "Authorization", "Bearer "+key).Status)
	}
	if fmt.Sprint(statuses) != "[200 200 200 429]" {
		t.Errorf("one budget across the instances: %v, want [200 200 200 429]", statuses)
	}
	// Usage is the cluster's: each instance adds its counts to Redis every
	// 10 s, and either one answers with the sum.
	deadline := time.Now().Add(15 * time.Second)
	for {
		total := usageTotal(t, admins[0], "k_walkthrough")
		if total == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster usage shows %d requests, want 3 (2 on one instance, 1 on the other)", total)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := gatewaytest.Admin(t, "POST", admins[1], "/apikey/keys/k_walkthrough/revoke"); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	for i, u := range urls {
		// At once on the instance that revoked it; within a second (the
		// README's promise, in practice milliseconds) on the other.
		deadline := time.Now().Add(time.Second)
		for {
			r := gatewaytest.Send(t, "GET", u, "Authorization", "Bearer "+key)
			if r.Status == 401 && r.Err.Code == decisionRevokedKey {
				break
			}
			if i == 1 || time.Now().After(deadline) {
				t.Errorf("instance %d after the revocation: %d %s", i, r.Status, r.Err.Code)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestQuotaEventsOncePerCluster: with counters on Redis, a quota warning
// another instance already sent for the key's window is not sent again;
// the ones nobody sent are, once.
func TestQuotaEventsOncePerCluster(t *testing.T) {
	srv := redistest.Start(t)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_cluster_events", Type: "dev", Role: "reader", QuotaPerDay: int64p(10)})
	port := gatewaytest.Port(t)
	doc := adaptJSON(t, gatewaytest.Site{Port: port, KeyFile: gatewaytest.WriteKeyFile(t, key.Record),
		CountersRedis: srv.Addr(), CountersOptions: "timeout 2s"}.Caddyfile())
	doc["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{eventQuotaWarning, eventQuotaExceeded},
		"handlers": []any{map[string]any{"handler": "apikey_test_recorder"}},
	}}}
	// Another instance already sent the 80 % warning for this window.
	other := &ratelimit.RedisStore{Config: redisconn.Config{Addresses: []string{srv.Addr()}}}
	ctx := caddy.Context{Context: context.Background()}
	if err := other.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer other.Cleanup()
	if first, err := other.FirstToAnnounce(context.Background(), "k_cluster_events", "warning80", time.Now().Add(48*time.Hour)); !first || err != nil {
		t.Fatalf("the other instance's mark: %v %v", first, err)
	}
	takeEvents()
	gatewaytest.StartJSON(t, doc)
	for range 12 {
		gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/", port), key.Bearer()...)
	}
	time.Sleep(500 * time.Millisecond) // events are sent off the request path
	var names []string
	for _, e := range takeEvents() {
		name := e.Name()
		if name == eventQuotaWarning {
			name += fmt.Sprint(e.Data["percent"])
		}
		names = append(names, name)
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[apikey_quota_exceeded apikey_quota_warning90]" {
		t.Errorf("events %v, want the 90 %% warning and quota_exceeded once, and no 80 %% warning (another instance sent it)", names)
	}
}

// TestGatewayOnARedisCluster runs a Caddy process whose keys, counters and
// usage are on a real three-node Redis Cluster: a key made with the command
// works, its quota is exact under concurrent load, its usage is summed, and
// a revocation is seen.
func TestGatewayOnARedisCluster(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	cluster := redistest.StartCluster(t, 3)
	addrs := strings.Join(cluster.Addrs(), " ")
	up := gatewaytest.NewUpstream(t)
	port, admin := gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.StartProcess(t, gatewaytest.Site{Port: port, AdminPort: admin, KeysRedis: addrs, CountersRedis: addrs, CountersOptions: "timeout 2s",
		Apikey: "failed_auth_limit off", Handler: "reverse_proxy " + up.Addr()}.Caddyfile())
	out, errOut, code := gatewaytest.CLI(t, "", "new", "--redis", strings.Join(cluster.Addrs(), ","), "--type", "dev", "--role", "reader",
		"--quota-per-day", "20", "--id", "k_on_cluster")
	if code != 0 {
		t.Fatalf("new on a cluster: %s", errOut)
	}
	key := strings.TrimSpace(out)
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	codes := gatewaytest.Tally(gatewaytest.Burst(50, func(int) *http.Request {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		return req
	}))
	if codes[200] != 20 || codes[429] != 30 {
		t.Errorf("50 concurrent requests on a quota of 20: %v", codes)
	}
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", admin)
	if code, body := gatewaytest.Admin(t, "GET", adminURL, "/apikey/usage?key=k_on_cluster"); code != 200 || !strings.Contains(body, `"requests": 20`) {
		t.Errorf("usage from the cluster: %d %s", code, body)
	}
	if code, body := gatewaytest.Admin(t, "POST", adminURL, "/apikey/keys/k_on_cluster/revoke"); code != 200 {
		t.Fatalf("revoke on a cluster: %d %s", code, body)
	}
	if r := gatewaytest.Send(t, "GET", url, "Authorization", "Bearer "+key); r.Status != 401 || r.Err.Code != decisionRevokedKey {
		t.Errorf("after the revocation: %d %s", r.Status, r.Err.Code)
	}
}

// TestKeysOnRedisStopAndReload: a config with keys redis stops, and is
// replaced by a reload, at once while Redis is healthy (the subscription
// to key changes must not hold them up).
func TestKeysOnRedisStopAndReload(t *testing.T) {
	srv := redistest.Start(t)
	port := gatewaytest.Port(t)
	cfg := func(negative string) string {
		return fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys redis {
			address %s
		}
		cache {
			negative_ttl %s
		}
	}
	respond ok
}`, port, srv.Addr(), negative)
	}
	within := func(what string, fn func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not finish within 5 s", what)
		}
	}
	within("loading", func() error { return gatewaytest.Load(cfg("10s")) })
	time.Sleep(300 * time.Millisecond) // subscribed
	within("a reload that replaces the source", func() error { return gatewaytest.Load(cfg("5s")) })
	time.Sleep(300 * time.Millisecond)
	within("stopping", gatewaytest.Stop)
}

// TestClusterUsageSurvivesRestarts: an instance that stops and starts
// again (on the same usage file) does not add its history to the cluster's
// totals again, and its last counts before a clean stop are in them.
func TestClusterUsageSurvivesRestarts(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	srv := redistest.Start(t)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_restarts", Type: "dev", Role: "reader"})
	keyFile := gatewaytest.WriteKeyFile(t, key.Record)
	usageFile := filepath.Join(t.TempDir(), "usage.json")
	port, admin := gatewaytest.Port(t), gatewaytest.Port(t)
	cfg := gatewaytest.Site{Port: port, AdminPort: admin, KeyFile: keyFile, Apikey: "usage_file " + usageFile,
		CountersRedis: srv.Addr(), CountersOptions: "timeout 2s"}.Caddyfile()
	total := func() int64 { return usageTotal(t, fmt.Sprintf("http://127.0.0.1:%d", admin), "k_restarts") }
	for round := 1; round <= 3; round++ {
		cmd := gatewaytest.StartProcess(t, cfg)
		for range 4 {
			gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/", port), key.Bearer()...)
		}
		if n := total(); n != int64(4*round) {
			t.Fatalf("round %d: cluster usage %d, want %d", round, n, 4*round)
		}
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}

// TestRedisGivenOnce: with the global apikey { redis { … } } option, keys
// redis and counters redis name no Redis of their own, and share it.
func TestRedisGivenOnce(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	srv := redistest.Start(t)
	port := gatewaytest.Port(t)
	gatewaytest.StartProcess(t, gatewaytest.Site{Port: port, Global: "address " + srv.Addr(), KeysRedis: "global", CountersRedis: "global",
		Apikey: "failed_auth_limit off"}.Caddyfile())
	quotaOfTwo(t, fmt.Sprintf("http://127.0.0.1:%d/", port), "keys and counters from the global redis",
		"--redis", srv.Addr(), "--id", "k_once")
	// A route that names neither an address nor a global option fails the
	// load with a message that says what to do.
	err := gatewaytest.Load(`{
	admin off
	persist_config off
}
http://127.0.0.1:1 {
	apikey {
		keys redis
	}
}`)
	if err == nil || !strings.Contains(err.Error(), "global option apikey { redis") {
		t.Errorf("keys redis without any redis: %v", err)
	}
}

// TestRedisThroughSentinel: keys and counters reached through a real
// sentinel (master_name), as given once in the global option.
func TestRedisThroughSentinel(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master, "gwmaster")
	port := gatewaytest.Port(t)
	gatewaytest.StartProcess(t, gatewaytest.Site{Port: port, Global: "address " + sentinel.Addr() + "\nmaster_name gwmaster\ntimeout 2s",
		KeysRedis: "global", CountersRedis: "global", Apikey: "failed_auth_limit off"}.Caddyfile())
	quotaOfTwo(t, fmt.Sprintf("http://127.0.0.1:%d/", port), "through a sentinel",
		"--redis", sentinel.Addr(), "--redis-master-name", "gwmaster", "--id", "k_sentinel")
}

// usageTotal is the requests /apikey/usage counts for a key.
func usageTotal(t *testing.T, admin, keyID string) int64 {
	t.Helper()
	_, body := gatewaytest.Admin(t, "GET", admin, "/apikey/usage?key="+keyID)
	var answer struct {
		Rows []struct {
			Requests int64 `json:"requests"`
		} `json:"rows"`
	}
	json.Unmarshal([]byte(body), &answer)
	var total int64
	for _, r := range answer.Rows {
		total += r.Requests
	}
	return total
}

// quotaOfTwo makes a dev reader with 2 requests a day with the command
// (storeArgs name the store and id), and checks that url admits it twice,
// then refuses it for its quota.
func quotaOfTwo(t *testing.T, url, what string, storeArgs ...string) {
	t.Helper()
	args := append([]string{"new", "--type", "dev", "--role", "reader", "--quota-per-day", "2"}, storeArgs...)
	out, errOut, code := gatewaytest.CLI(t, "", args...)
	if code != 0 {
		t.Fatal(errOut)
	}
	key := strings.TrimSpace(out)
	var statuses []int
	for range 3 {
		statuses = append(statuses, gatewaytest.Send(t, "GET", url, "Authorization", "Bearer "+key).Status)
	}
	if fmt.Sprint(statuses) != "[200 200 429]" {
		t.Errorf("%s: %v, want [200 200 429]", what, statuses)
	}
}

// TestNewerRedisRecordIsAStoreError: a key whose record on Redis was
// written by a newer caddy-apikey (its "version" is 2) gets 503 from the
// gateway, as when Redis fails, never 401 "invalid key"; Caddy's log names
// the key id and the format, never the hash; a record without a version
// (as v0.1.0 wrote it) still authenticates beside it.
func TestNewerRedisRecordIsAStoreError(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	srv := redistest.Start(t)
	up := gatewaytest.NewUpstream(t)
	port := gatewaytest.Port(t)
	caddyProc := gatewaytest.StartProcess(t, redisKeysSite(port, gatewaytest.Port(t), srv.Addr(), up.Addr()))
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/models", port)
	keys := map[string]string{}
	for _, id := range []string{"k_v1", "k_v2"} {
		key, err := apikeyCLI(t, "new", "--redis", srv.Addr(), "--type", "dev", "--role", "reader", "--id", id)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = key
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	ctx := context.Background()
	rec, err := rc.Get(ctx, "apikey:{keys}:rec:k_v2").Result()
	if err != nil || strings.Contains(rec, `"version"`) {
		t.Fatalf("the record as written: %v (a version in it: %v)", err, strings.Contains(rec, `"version"`))
	}
	if err := rc.Set(ctx, "apikey:{keys}:rec:k_v2", `{"version":2,"scopes":["chat"],`+rec[1:], 0).Err(); err != nil {
		t.Fatal(err)
	}

	if r := gatewaytest.Send(t, "GET", url, "Authorization", "Bearer "+keys["k_v1"]); r.Status != 200 {
		t.Errorf("a record of format 1 (no version): %d", r.Status)
	}
	if r := gatewaytest.Send(t, "GET", url, "Authorization", "Bearer "+keys["k_v2"]); r.Status != 503 || r.Err.Code != decisionUnavailable {
		t.Errorf("a record of format 2: %d %q, want 503 %q (never 401)", r.Status, r.Err.Code, decisionUnavailable)
	}
	logPath := caddyProc.Stdout.(*os.File).Name()
	want := `record \"k_v2\" in redis is format 2; this caddy-apikey reads key records up to format 1: upgrade caddy-apikey`
	deadline := time.Now().Add(5 * time.Second)
	var log []byte
	for ; !strings.Contains(string(log), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Caddy's log does not say %s", want)
		}
		log, _ = os.ReadFile(logPath)
	}
	sum := keystore.Sum(keys["k_v2"])
	if strings.Contains(string(log), sum.Hex()) || strings.Contains(string(log), sum.Encode()) {
		t.Error("Caddy's log names the key's hash")
	}
}
