package gatewaytest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Client is the client of the tests: a 10 s timeout, and a bodiless
// request sent once more when Caddy closed its connection unanswered in the
// moment after a reload (see Load).
var Client = &http.Client{Timeout: 10 * time.Second, Transport: reloadTolerant{http.DefaultTransport}}

// reloadTolerant sends a request without a body once more when its
// connection was closed before any answer came. Caddy does that to a
// handful of connections in the moment after a reload: the old servers
// shut down after caddy.Load returns, and one may accept a connection and
// close it unanswered (plain `respond` routes show it too, about 1 in 30
// requests sent right after a reload). Browsers and HTTP libraries retry
// such requests; a request that was answered, or that has a body, is never
// sent twice.
type reloadTolerant struct{ next http.RoundTripper }

func (rt reloadTolerant) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	if err != nil && req.Body == nil && closedUnanswered(err) {
		return rt.next.RoundTrip(req)
	}
	return resp, err
}

func closedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// Response is what a client got back from the gateway.
type Response struct {
	Status int
	Header http.Header
	Body   string
	// Err is the error body of a JSON answer, in any of the gateway's
	// error formats: {"error": {...}} (default, openai) or
	// {"error": "<message>", "code", "reason"} (ollama).
	Err struct {
		Status  int    `json:"status"`
		Code    string `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
}

// Send makes one request with Client; headers come as name, value pairs.
// The test fails on a transport error, or on a JSON answer without an
// "error".
func Send(t testing.TB, method, url string, headers ...string) Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	if resp.Header.Get("Content-Type") == "application/json" {
		var wrapper struct {
			Error  *json.RawMessage `json:"error"`
			Code   string           `json:"code"`
			Reason string           `json:"reason"`
		}
		if err := json.Unmarshal(body, &wrapper); err != nil || wrapper.Error == nil {
			t.Fatalf("%s %s: error body has no \"error\": %q", method, url, body)
		}
		if err := json.Unmarshal(*wrapper.Error, &r.Err.Message); err == nil {
			r.Err.Status, r.Err.Code, r.Err.Reason = resp.StatusCode, wrapper.Code, wrapper.Reason
		} else if err := json.Unmarshal(*wrapper.Error, &r.Err); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// burstClient is Client with a bound for a burst: hundreds of requests
// sent at once on two loaded cores under -race wait their turn for longer
// than one request should (94 of 450 took over 10 s once); the bound is
// against a hang, and the tests count what every request got.
var burstClient = &http.Client{Timeout: 2 * time.Minute, Transport: Client.Transport}

// Burst sends n requests all at once with burstClient and returns each
// one's status, -1 for a transport error.
func Burst(n int, newRequest func(i int) *http.Request) []int {
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newRequest(i)
			<-start
			resp, err := burstClient.Do(req)
			if err != nil {
				statuses[i] = -1
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	return statuses
}

// Tally counts statuses.
func Tally(statuses []int) map[int]int {
	codes := map[int]int{}
	for _, s := range statuses {
		codes[s]++
	}
	return codes
}
