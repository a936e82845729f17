package gatewaytest

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Admin makes a request to Caddy's admin endpoint at base (e.g.
// http://127.0.0.1:2019) for uri (a path and query) with Client, and
// returns the status and body. It sends the Origin a browser would (the
// admin endpoint checks it): the base, not the whole URL, which Caddy logs
// with the request's headers. A uri with an invalid escape is sent as it
// is, the way curl sends it. A failure names the method, not the URL.
func Admin(t testing.TB, method, base, uri string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+uri, nil)
	if err != nil {
		if req, err = http.NewRequest(method, base, nil); err != nil {
			t.Fatalf("%s: a bad base URL", method)
		}
		path, query, _ := strings.Cut(uri, "?")
		req.URL.Opaque, req.URL.RawQuery = path, query
	}
	req.Header.Set("Origin", base)
	resp, err := Client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, errors.Unwrap(err)) // the error without the URL
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
