package apikey

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// TestTokenBudgetAcrossInstances: two gateways on one Redis, one in this
// process and one the built binary, share a key's daily token budget
// exactly. 200 concurrent streamed requests, split across both, each
// reserve more than the upstream then reports (the upstream reports
// prompt = body/8 and 5 completion tokens; the gateway reserves
// max_tokens 5 + body/4), so the README's overshoot bound, Σ (reported −
// reserved) over requests in flight, is ≤ 0 here: the charged total must
// never pass the budget. Asserted: (a) charged (the Redis hash's du) ≤
// budget; (b) every refused request got 429 tokens_daily and never reached
// the upstream (upstream calls == admitted); (c) charged == the sum the
// upstream reported for the admitted requests; and the RateLimit header of
// a last request on either instance agrees.
func TestTokenBudgetAcrossInstances(t *testing.T) {
	// The requests go in waves of 50, wave apart: the first wave fits the
	// budget whole (50 × its reservation < budget), so both instances admit
	// some whichever answers faster; the streams (5 chunks, 20 ms apart)
	// outlast a wave, so later waves race reservations against settlements.
	const budget, requests, waveSize, wave = 3000, 200, 50, 80 * time.Millisecond
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	up := newLLMUpstream(t, 20*time.Millisecond)
	key := tokenKey(t, "k_cluster", func(r *keystore.Record) { r.TokensPerDay = int64p(budget) })
	keys := gatewaytest.WriteKeyFile(t, key.Record)
	upAddr := strings.TrimPrefix(up.URL, "http://")
	ports := []int{gatewaytest.Port(t), gatewaytest.Port(t)}
	gatewaytest.Start(t, gatewaytest.TokensRedisSite(ports[0], keys, srv.Addr(), "timeout 2s", upAddr))
	gatewaytest.StartProcess(t, gatewaytest.TokensRedisSite(ports[1], keys, srv.Addr(), "timeout 2s", upAddr))

	bodies := []string{
		`{"model":"llama3","messages":[{"role":"user","content":"hello there"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"llama3","messages":[{"role":"user","content":"hello there"}],"max_tokens":5,"stream":true}`, // usage asked and hidden by the gateway
	}
	for _, b := range bodies {
		b = strings.TrimSuffix(b, `"stream":true}`) + `"stream":true,"stream_options":{"include_usage":true}}` // as sent upstream
		if reported, reserved := int64(len(b)/8+5), reserveOf(b, 5); reported >= reserved || waveSize*reserved > budget {
			t.Fatalf("the test needs reports below reservations (%d, %d) and a first wave that fits", reported, reserved)
		}
	}

	type outcome struct {
		instance int
		status   int
		body     string
		err      error
	}
	out := make([]outcome, requests)
	tr := &http.Transport{MaxIdleConnsPerHost: requests}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	start := make(chan struct{})
	began := time.Now()
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &out[i]
			o.instance = i % 2
			req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/openai/v1/chat/completions", ports[o.instance]),
				strings.NewReader(bodies[(i/2)%2]))
			req.Header.Set("Authorization", "Bearer "+key.Secret)
			req.Header.Set("Content-Type", "application/json")
			<-start
			time.Sleep(time.Duration(i/waveSize) * wave)
			resp, err := hc.Do(req)
			if err != nil {
				o.err = err
				return
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			o.status, o.body, o.err = resp.StatusCode, string(data), err
		}()
	}
	close(start)
	wg.Wait()
	took := time.Since(began)

	admitted, refused := [2]int{}, [2]int{}
	for i, o := range out {
		switch {
		case o.err != nil:
			t.Errorf("request %d (instance %d): %v", i, o.instance, o.err)
		case o.status == 200:
			admitted[o.instance]++
			if !strings.HasSuffix(o.body, "data: [DONE]\n\n") || strings.Count(o.body, `"content":"tok "`) != 5 {
				t.Errorf("request %d: an admitted stream did not arrive whole: %q", i, o.body)
			}
			if i/2%2 == 1 && strings.Contains(o.body, `"usage":{`) {
				t.Errorf("request %d: the usage chunk reached a client that did not ask", i)
			}
		case o.status == 429:
			refused[o.instance]++
			if !strings.Contains(o.body, `"code":"quota_exceeded"`) || !strings.Contains(o.body, `"reason":"tokens_daily"`) {
				t.Errorf("request %d: 429 %s, want reason tokens_daily", i, o.body)
			}
		default:
			t.Errorf("request %d (instance %d): %d %s", i, o.instance, o.status, o.body)
		}
	}
	total := admitted[0] + admitted[1]
	t.Logf("%d requests in %v: admitted %v, refused %v per instance; the upstream had up to %d streams at once",
		requests, took.Round(time.Millisecond), admitted, refused, up.maxInflight.Load())
	if total == 0 || refused[0]+refused[1] == 0 || admitted[0] == 0 || admitted[1] == 0 {
		t.Errorf("the test needs admissions on both instances and refusals: admitted %v, refused %v", admitted, refused)
	}
	if up.maxInflight.Load() < 2 {
		t.Errorf("the streams never overlapped (at most %d at once)", up.maxInflight.Load())
	}
	// (b) refused requests never reached the upstream.
	if calls := up.calls.Load(); calls != int64(total) {
		t.Errorf("the upstream was called %d times for %d admitted requests", calls, total)
	}

	// (a) and (c): what Redis holds once every settlement ran.
	ctx := context.Background()
	hash := ratelimit.TokensRedisKey(ratelimit.DefaultRedisKeyPrefix, key.Record.ID)
	var charged int64
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := rc.HGet(ctx, hash, "du").Int64()
		if err != nil {
			t.Fatalf("reading %s du: %v", hash, err)
		}
		charged = v
		if charged == up.total() || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if charged > budget {
		t.Errorf("charged %d tokens, over the budget of %d (the bound is ≤ 0 here: every report is below its reservation)", charged, budget)
	}
	if charged != up.total() {
		t.Errorf("charged %d tokens, the upstream reported %d for the %d admitted requests", charged, up.total(), total)
	}
	// The RateLimit header of a request that reserves nothing, on each
	// instance, says the same.
	for i, port := range ports {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/openai/v1/models", port), nil)
		req.Header.Set("Authorization", "Bearer "+key.Secret)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if left, ok := rateItem(resp.Header, "tokens-daily"); !ok || left != budget-charged {
			t.Errorf("instance %d: RateLimit %q, want tokens-daily r=%d", i, resp.Header.Get("RateLimit"), budget-charged)
		}
	}
}
