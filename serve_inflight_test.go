package apikey

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// slowLLM is a real upstream that reads each request's body (without
// keeping it: the test measures the gateway's memory, in this process), then
// holds its answer until released, then answers an OpenAI chat completion.
type slowLLM struct {
	*httptest.Server
	arrived  atomic.Int64 // requests whose body was read whole
	release  chan struct{}
	mu       sync.Mutex
	lastSize int64
	lastSum  [sha256.Size]byte
}

func newSlowLLM(t *testing.T) *slowLLM {
	u := &slowLLM{release: make(chan struct{})}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		u.mu.Lock()
		u.lastSize = n
		copy(u.lastSum[:], h.Sum(nil))
		u.mu.Unlock()
		u.arrived.Add(1)
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"chat.completion","model":"llama3","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}`)
	}))
	t.Cleanup(u.Close)
	t.Cleanup(func() {
		select {
		case <-u.release:
		default:
			close(u.release)
		}
	})
	return u
}

// llmBody is a chat completion request of exactly size bytes.
func llmBody(size int) []byte {
	head := `{"model":"llama3","max_tokens":1,"messages":[{"role":"user","content":"`
	tail := `"}]}`
	return []byte(head + strings.Repeat("a", size-len(head)-len(tail)) + tail)
}

// heapSampler records the largest HeapInuse seen until stopped.
type heapSampler struct {
	stop chan struct{}
	done chan struct{}
	peak atomic.Uint64
}

func sampleHeap() *heapSampler {
	s := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > s.peak.Load() {
				s.peak.Store(ms.HeapInuse)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *heapSampler) end() uint64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

// heapInuse is HeapInuse after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// bodiesHeld is what the process's requests hold, for key id ("" for all).
func bodiesHeld(id string) int64 {
	if v, ok := app.Current(heldKey); ok {
		return v.(*heldBodies).held(id)
	}
	return 0
}

// inflightAnswer is one client's answer.
type inflightAnswer struct {
	status     int
	retryAfter string
	body       string
}

// TestTokenRouteCapsBodiesInFlight: a route with tokens in front of a slow
// upstream, with max_inflight_body 8MiB 24MiB. One key sends 30 bodies of
// 1,000,000 bytes at once: 8 reach the upstream, 22 get 429 inflight_body
// with Retry-After. Then 40 other keys send one each: the total admits 17
// more (25 in all), the other 23 get 503 inflight_body with Retry-After. The
// heap meanwhile grows by less than the total cap plus 16 MiB (it grew by
// about 2 MiB a body before). A client that goes away mid-body leaves
// nothing held; once the answers are released every byte is given back, and
// the key again gets 8 bodies through at once, and a chunked body passes
// whole.
func TestTokenRouteCapsBodiesInFlight(t *testing.T) {
	const size, perKeyCap, totalCap = 1_000_000, 8 << 20, 24 << 20
	up := newSlowLLM(t)
	one := tokenKey(t, "k_inflight_one", nil)
	records := []keystore.Record{one.Record}
	var many []gatewaytest.Key
	for i := range 40 {
		k := tokenKey(t, fmt.Sprintf("k_inflight_%02d", i), nil)
		many = append(many, k)
		records = append(records, k.Record)
	}
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		service openai
		tokens openai
		failed_auth_limit off
		max_inflight_body 8MiB 24MiB
	}
	reverse_proxy %s
}`, port, gatewaytest.WriteKeyFile(t, records...), strings.TrimPrefix(up.URL, "http://")))
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port)
	body := llmBody(size)
	// Many connections at once: none may wait for an idle one.
	cl := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 100}}
	defer cl.CloseIdleConnections()

	var wg sync.WaitGroup
	answers := make(chan inflightAnswer, 200)
	// Each body goes out on a connection of its own, written while the
	// answer is read: a refusal comes before the body is read, and the
	// gateway closes the connection after it (answerUnread), so a client
	// that only reads once it has written all (Go's Transport) may meet the
	// reset of the close instead of the answer.
	sendBody := func(k gatewaytest.Key) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				answers <- inflightAnswer{status: -1, body: err.Error()}
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(time.Minute))
			go func() {
				fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", port, k.Secret, len(body))
				_, _ = conn.Write(body) // fails once a refusal closed the connection
			}()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				answers <- inflightAnswer{status: -1, body: err.Error()}
				return
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- inflightAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(data)}
		}()
	}
	// collect waits for n refusals (the admitted requests wait upstream).
	collect := func(n int, what string) []inflightAnswer {
		t.Helper()
		var got []inflightAnswer
		timeout := time.After(15 * time.Second)
		for len(got) < n {
			select {
			case a := <-answers:
				got = append(got, a)
			case <-timeout:
				t.Fatalf("%s: %d answers of %d within 15 s; upstream has %d", what, len(got), n, up.arrived.Load())
			}
		}
		return got
	}
	checkRefusals := func(got []inflightAnswer, status int, what string) {
		t.Helper()
		for _, a := range got {
			if a.status != status || a.retryAfter == "" || !strings.Contains(a.body, `"inflight_body"`) {
				t.Fatalf("%s: %d, Retry-After %q, %.200s; want %d inflight_body with Retry-After", what, a.status, a.retryAfter, a.body, status)
			}
		}
	}

	before := heapInuse()
	sampler := sampleHeap()
	for range 30 {
		sendBody(one)
	}
	checkRefusals(collect(22, "one key, 30 bodies"), http.StatusTooManyRequests, "one key over its cap")
	gatewaytest.WaitUntil(t, "8 bodies upstream", 10*time.Second, func() bool { return up.arrived.Load() == 8 })
	if held := bodiesHeld(one.Record.ID); held != 8*size {
		t.Errorf("the key holds %d bytes, want %d", held, 8*size)
	}

	// A client that goes away in the middle of its body.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", port, many[39].Secret, size)
	conn.Write(body[:size/10])
	gatewaytest.WaitUntil(t, "the cut body counted", 5*time.Second, func() bool { return bodiesHeld(many[39].Record.ID) == size })
	conn.Close()
	gatewaytest.WaitUntil(t, "the cut body given back", 5*time.Second, func() bool { return bodiesHeld(many[39].Record.ID) == 0 })

	for _, k := range many {
		sendBody(k)
	}
	checkRefusals(collect(23, "40 keys, one body each"), http.StatusServiceUnavailable, "all keys over the total")
	gatewaytest.WaitUntil(t, "25 bodies upstream", 10*time.Second, func() bool { return up.arrived.Load() == 25 })
	if held := bodiesHeld(""); held != 25*size {
		t.Errorf("all requests hold %d bytes, want %d", held, 25*size)
	}
	atPeak := heapInuse()
	peak := sampler.end()
	t.Logf("heap in use: %.1f MiB before, %.1f MiB with 25 bodies held (after a GC), %.1f MiB at the peak (sampled)",
		float64(before)/(1<<20), float64(atPeak)/(1<<20), float64(peak)/(1<<20))
	if grew := int64(peak) - int64(before); grew > totalCap+16<<20 {
		t.Errorf("the heap grew by %.1f MiB with 25 bodies held, more than the total cap (24 MiB) plus 16 MiB", float64(grew)/(1<<20))
	}

	close(up.release)
	wg.Wait()
	close(answers)
	ok := 0
	for a := range answers {
		if a.status != 200 {
			t.Errorf("an admitted request: %d %.200s", a.status, a.body)
		}
		ok++
	}
	if ok != 25 {
		t.Errorf("%d admitted requests answered, want 25", ok)
	}
	gatewaytest.WaitUntil(t, "every byte given back", 5*time.Second, func() bool { return bodiesHeld("") == 0 })

	// The key's whole cap is free again: 8 bodies at once all pass.
	codes := gatewaytest.Tally(gatewaytest.Burst(8, func(int) *http.Request {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+one.Secret)
		req.Header.Set("Content-Type", "application/json")
		return req
	}))
	if codes[200] != 8 {
		t.Errorf("8 bodies from the key after the others ended: %v", codes)
	}
	// A body of unknown length (chunked) passes whole.
	req, _ := http.NewRequest("POST", url, io.MultiReader(bytes.NewReader(body)))
	req.Header.Set("Authorization", "Bearer "+one.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	up.mu.Lock()
	gotSize, gotSum := up.lastSize, up.lastSum
	up.mu.Unlock()
	if resp.StatusCode != 200 || gotSize != size || gotSum != sha256.Sum256(body) {
		t.Errorf("a chunked body: %d; the upstream got %d bytes (want %d), same bytes: %v", resp.StatusCode, gotSize, size, gotSum == sha256.Sum256(body))
	}
	gatewaytest.WaitUntil(t, "every byte given back at the end", 5*time.Second, func() bool { return bodiesHeld("") == 0 })
}

// TestMaxInflightBodyBelowRequestBodyRefused: a per-key cap below
// max_request_body, which no body of that size could pass, fails the load.
func TestMaxInflightBodyBelowRequestBodyRefused(t *testing.T) {
	err := gatewaytest.Load(fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		tokens openai
		max_request_body 2097152
		max_inflight_body 1MiB
	}
	respond ok
}`, gatewaytest.Port(t), gatewaytest.WriteKeyFile(t, tokenKey(t, "k_inflight_cfg", nil).Record)))
	t.Cleanup(func() { gatewaytest.Stop() })
	if err == nil || !strings.Contains(err.Error(), "below max_request_body") {
		t.Fatalf("loading a per-key cap below max_request_body: %v", err)
	}
}

// TestInflightBodiesCountedAcrossReload: bodies held by requests admitted
// under one config still count after a reload: with 4 bodies of 1,000,000
// bytes held and a total of 4MiB, a body from another key gets 503 under the
// new config, and passes once the old requests ended.
func TestInflightBodiesCountedAcrossReload(t *testing.T) {
	const size = 1_000_000
	up := newSlowLLM(t)
	a, b := tokenKey(t, "k_reload_a", nil), tokenKey(t, "k_reload_b", nil)
	port := gatewaytest.Port(t)
	config := func(comment string) string {
		return fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	header X-Config %s
	apikey {
		keys file %s
		service openai
		tokens openai
		failed_auth_limit off
		max_inflight_body 4MiB 4MiB
	}
	reverse_proxy %s
}`, port, comment, gatewaytest.WriteKeyFile(t, a.Record, b.Record), strings.TrimPrefix(up.URL, "http://"))
	}
	gatewaytest.Start(t, config("first"))
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port)
	body := llmBody(size)
	// do sends a body with k and returns the status, the answer and the
	// config that gave it.
	do := func(k gatewaytest.Key) (int, string, string) {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+k.Secret)
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			return -1, err.Error(), ""
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data), resp.Header.Get("X-Config")
	}
	var wg sync.WaitGroup
	statuses := make([]int, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _, _ = do(a)
		}()
	}
	gatewaytest.WaitUntil(t, "4 bodies upstream", 10*time.Second, func() bool { return up.arrived.Load() == 4 })
	if err := gatewaytest.Load(config("second")); err != nil {
		t.Fatal(err)
	}
	// Caddy stops the old config's servers after the reload: for a moment
	// one may still take a connection. Either config refuses the body (they
	// share the total); send it until the new config is the one refusing.
	gatewaytest.WaitUntil(t, "the new config in force", 10*time.Second, func() bool {
		status, body, config := do(b)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, `"inflight_body"`) {
			t.Fatalf("a body after the reload, with the old config's requests holding the total: %d %.200s", status, body)
		}
		return config == "second"
	})
	close(up.release)
	wg.Wait()
	for _, s := range statuses {
		if s != 200 {
			t.Errorf("a request admitted before the reload: %d", s)
		}
	}
	gatewaytest.WaitUntil(t, "every byte given back", 5*time.Second, func() bool { return bodiesHeld("") == 0 })
	if status, body, _ := do(b); status != 200 {
		t.Errorf("a body once the old requests ended: %d %.200s", status, body)
	}
}

// TestRefusedBodyLeavesNothingOnTheConnection: a refusal that leaves part of
// the request's body unread closes the connection after its answer. Caddy
// wraps the request body (its read_idle_timeout), so Go's server cannot see
// that the handler closed the body early: without the close it would read
// the rest of the body as the next request on the connection (a 400 or a
// 431 to the client's next request, or a request made of body bytes). Each
// case writes a body and a GET behind it on one connection, as a keep-alive
// client does, and must get the refusal and then the end of the
// connection: never a second answer.
func TestRefusedBodyLeavesNothingOnTheConnection(t *testing.T) {
	up := newSlowLLM(t)
	holder, k := tokenKey(t, "k_conn_holder", nil), tokenKey(t, "k_conn_refused", nil)
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		service openai
		tokens openai
		failed_auth_limit off
		max_request_body 1048576
		max_inflight_body 1MiB
	}
	reverse_proxy %s
}`, port, gatewaytest.WriteKeyFile(t, holder.Record, k.Record), strings.TrimPrefix(up.URL, "http://")))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// exchange writes head, body and a GET behind them on one connection
	// and reads what comes back: the first answer's status and whether
	// another answer followed it.
	exchange := func(head string, body []byte, key gatewaytest.Key) (status int, second string) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			// The gateway may close before all is written: errors are
			// the expected end.
			io.WriteString(conn, head+"Host: 127.0.0.1\r\nAuthorization: Bearer "+key.Secret+"\r\nContent-Type: application/json\r\n\r\n")
			conn.Write(body)
			io.WriteString(conn, "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		}()
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("key %s: first answer: %v", key.Record.ID, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		next, err := http.ReadResponse(br, nil)
		if err != nil {
			return resp.StatusCode, "" // closed
		}
		data, _ := io.ReadAll(next.Body)
		if next.StatusCode == http.StatusUnauthorized && bytes.Contains(data, []byte(`"missing_key"`)) {
			return resp.StatusCode, "" // the GET's own answer: in step
		}
		return resp.StatusCode, fmt.Sprintf("%d %.80q", next.StatusCode, data)
	}

	// Over max_request_body, the rest is drained and the GET answered; over
	// twice that, past what the gateway drains, the connection closes.
	for _, size := range []int{2_000_000, 4_000_000} {
		t.Run(fmt.Sprintf("chunked body of %d bytes over max_request_body", size), func(t *testing.T) {
			body := llmBody(size)
			chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
			status, second := exchange("POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", []byte(chunked), k)
			if status != http.StatusRequestEntityTooLarge || second != "" {
				t.Errorf("first answer %d (want 413), then %q (want the GET's answer or the connection closed)", status, second)
			}
		})
	}

	t.Run("key's bodies in flight at their cap", func(t *testing.T) {
		// holder's request holds 600 KB of the 1 MiB at the upstream; a
		// second 600 KB body of the same key cannot be held.
		held := llmBody(600_000)
		done := make(chan int, 1)
		go func() {
			req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions", bytes.NewReader(held))
			req.Header.Set("Authorization", "Bearer "+holder.Secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- -1
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		gatewaytest.WaitUntil(t, "the held body at the upstream", 10*time.Second, func() bool { return up.arrived.Load() == 1 })
		body := llmBody(600_000)
		status, second := exchange(fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n", len(body)), body, holder)
		close(up.release)
		if status != http.StatusTooManyRequests || second != "" {
			t.Errorf("first answer %d (want 429), then %q (want the GET's answer or the connection closed)", status, second)
		}
		if s := <-done; s != 200 {
			t.Errorf("the held request: %d", s)
		}
	})
}

// TestOverrideReadsCountInFlight: the method-override check reads the start
// of a form body (up to 64 KiB) before the request is admitted; a client
// that sends a little and stalls holds that buffer. Those starts count in
// max_inflight_body: beyond the key's cap its next such request gets 429,
// beyond the total any key's gets 503, at once; once the stalled requests
// end, requests pass again. (Before, each stalled request held its 64 KiB
// uncounted, 3,000 of them 276 MB more.)
func TestOverrideReadsCountInFlight(t *testing.T) {
	up := newLLMUpstream(t, 0)
	var keys []gatewaytest.Key
	for _, id := range []string{"k_stall_a", "k_stall_b", "k_stall_c"} {
		keys = append(keys, tokenKey(t, id, func(r *keystore.Record) { r.TokensPerDay = int64p(1_000_000) }))
	}
	g := newTokenGateway(t, tokenSite(t, up, gatewaytest.WriteKeyFile(t, keys[0].Record, keys[1].Record, keys[2].Record),
		"max_request_body 65536\n\t\t\tmax_inflight_body 128KiB 256KiB"))
	u, _ := url.Parse(g.base)
	const path = "/openai/v1/chat/completions"
	// stall sends a form body's first bytes of 65,536 and waits.
	stall := func(k gatewaytest.Key) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 65536\r\n\r\na=1&b=2", path, u.Host, k.Secret)
		return conn
	}
	// answer sends one more such request and reads its answer.
	answer := func(k gatewaytest.Key) (int, string) {
		t.Helper()
		conn := stall(k)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer within 10 s: %v", k.Record.ID, err)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	held := func() int64 { return bodiesHeld("") }
	var stalled []net.Conn
	for range 2 {
		stalled = append(stalled, stall(keys[0]))
	}
	gatewaytest.WaitUntil(t, "two body starts held", 10*time.Second, func() bool { return held() == 2*65536 })
	if code, body := answer(keys[0]); code != 429 || !strings.Contains(body, `"reason":"inflight_body"`) {
		t.Fatalf("%s, a third stalled body: %d %s, want 429 inflight_body", keys[0].Record.ID, code, body)
	}
	for range 2 {
		stalled = append(stalled, stall(keys[1]))
	}
	gatewaytest.WaitUntil(t, "four body starts held", 10*time.Second, func() bool { return held() == 4*65536 })
	if code, body := answer(keys[2]); code != 503 || !strings.Contains(body, `"reason":"inflight_body"`) {
		t.Fatalf("%s, over the total: %d %s, want 503 inflight_body", keys[2].Record.ID, code, body)
	}
	for _, c := range stalled {
		c.Close()
	}
	gatewaytest.WaitUntil(t, "the stalled requests' starts given back", 10*time.Second, func() bool { return held() == 0 })
	if resp, got := g.do(keys[2], path, `{"model":"llama3","max_tokens":3,"messages":[]}`); resp.StatusCode != 200 {
		t.Fatalf("%s after the stalls: %d %s", keys[2].Record.ID, resp.StatusCode, got)
	}
}
