package apikey

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// redisCalls is how many times Redis ran command (lower case) since its
// statistics were last reset, from INFO commandstats.
func redisCalls(t *testing.T, rc *redis.Client, command string) int64 {
	t.Helper()
	info, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+command+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		return n
	}
	return 0
}

// TestUsageRangeClampedToRetention: /apikey/usage on counts shared in a real
// Redis, asked for 2000-01-01 to 9999-12-31, answers within seconds with
// the range clamped to the usage retention (48 hours here), says so, still
// counts the key's requests, and costs Redis at most one HGETALL per hour
// of the retention (plus the hours at either end).
func TestUsageRangeClampedToRetention(t *testing.T) {
	srv := redistest.Start(t)
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_usage_range", Role: "reader"})
	port, admin := gatewaytest.Port(t), gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		usage_file %s
		usage_retention 48h
		failed_auth_limit off
		counters redis {
			address %s
		}
	}
	respond ok
}`, admin, port, gatewaytest.WriteKeyFile(t, key.Record), filepath.Join(t.TempDir(), "usage.json"), srv.Addr()))
	for range 3 {
		if r := gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/v1/x", port), key.Bearer()...); r.Status != 200 {
			t.Fatalf("request: %d", r.Status)
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	if err := rc.ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}

	for _, by := range []string{"hour", "day"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		url := fmt.Sprintf("http://127.0.0.1:%d/apikey/usage?key=k_usage_range&from=2000-01-01&to=9999-12-31&by=%s", admin, by)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Header.Set("Origin", url)
		start := time.Now()
		resp, err := gatewaytest.Client.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("by %s: a range of 8,000 years did not answer within 5 s: %v (HGETALLs so far: %d)", by, err, redisCalls(t, rc, "hgetall"))
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		took := time.Since(start)
		var answer struct {
			From, To time.Time
			Clamped  bool
			Rows     []struct{ Requests int64 }
		}
		if resp.StatusCode != 200 || json.Unmarshal(body, &answer) != nil {
			t.Fatalf("by %s: %d %s", by, resp.StatusCode, body)
		}
		var requests int64
		for _, r := range answer.Rows {
			requests += r.Requests
		}
		now := time.Now()
		if !answer.Clamped || answer.From.Before(now.Add(-(48+25)*time.Hour)) || answer.To.After(now.Add(25*time.Hour)) {
			t.Errorf("by %s: the answer says from %s to %s, clamped %v; want the 48 h retention, clamped", by, answer.From, answer.To, answer.Clamped)
		}
		if requests != 3 {
			t.Errorf("by %s: %d requests counted, want 3", by, requests)
		}
		t.Logf("by %s: answered in %v, from %s to %s", by, took, answer.From, answer.To)
	}
	// 48 hours of retention and the hour on either end, per report.
	n := redisCalls(t, rc, "hgetall")
	if n == 0 || n > 2*(48+2) {
		t.Errorf("two reports made %d HGETALLs, want at most %d (one an hour kept)", n, 2*(48+2))
	}
	t.Logf("two reports made %d HGETALLs", n)
}
