package apikey

import (
	"context"
	"fmt"
	"io"
	"net/http"
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

// TestTokenReservationsSurviveARedisStall: streamed token traffic on a
// tokens openai route counting in Redis (timeout 100ms, on_failure local),
// and Redis stalls for 3 s (DEBUG SLEEP 3) in the middle of it. Settlements
// that time out are retried until Redis acknowledges them, reservations
// whose answer was lost are cancelled, and what was counted in memory
// during the stall is charged to Redis once: when the traffic is over,
// Redis's charged tokens equal the sum the upstream reported.
func TestTokenReservationsSurviveARedisStall(t *testing.T) {
	srv := redistest.StartWith(t, "--save", "", "--appendonly", "no", "--enable-debug-command", "yes")
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 10 * time.Second})
	defer rc.Close()
	up := newLLMUpstream(t, 20*time.Millisecond)
	key := tokenKey(t, "k_stall", func(r *keystore.Record) { r.TokensPerDay = int64p(100_000_000) })
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, gatewaytest.TokensRedisSite(port, gatewaytest.WriteKeyFile(t, key.Record), srv.Addr(),
		"timeout 100ms\n\t\t\t\ton_failure local", strings.TrimPrefix(up.URL, "http://")))

	body := `{"model":"llama3","messages":[{"role":"user","content":"hello there"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, ok, failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/openai/v1/chat/completions", port), strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key.Secret)
				req.Header.Set("Content-Type", "application/json")
				sent.Add(1)
				resp, err := hc.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && strings.HasSuffix(string(data), "data: [DONE]\n\n") {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	// Traffic before, during and after the stall.
	waitFor := func(n int64) {
		deadline := time.Now().Add(20 * time.Second)
		for ok.Load() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(40)
	stalled := time.Now()
	if err := rc.Do(context.Background(), "DEBUG", "SLEEP", "3").Err(); err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
	t.Logf("redis stalled for %v", time.Since(stalled).Round(time.Millisecond))
	waitFor(ok.Load() + 40)
	close(stop)
	wg.Wait()

	hash := ratelimit.TokensRedisKey(ratelimit.DefaultRedisKeyPrefix, key.Record.ID)
	var charged int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		charged, _ = rc.HGet(context.Background(), hash, "du").Int64()
		if charged == up.total() || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d requests, %d answered whole, %d failed; the upstream reported %d tokens, redis charged %d",
		sent.Load(), ok.Load(), failed.Load(), up.total(), charged)
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	if charged != up.total() {
		t.Errorf("redis charged %d tokens, the upstream reported %d", charged, up.total())
	}
	// Nothing is left reserved in Redis.
	if n, _ := rc.HLen(context.Background(), hash+":r").Result(); n != 0 {
		t.Errorf("%d reservations are still pending in redis", n)
	}
}
