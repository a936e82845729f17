package apikey

import (
	"errors"
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/activity"
)

// The activity of a known key (its refusals by reason, its requests and
// tokens per model, the log of its last requests) is recorded once the
// request ends, in the activity of the route's store (app.HoldActivity),
// which the portal of that store reads (while no portal of the store runs,
// nothing is recorded). Requests refused before their key
// was known (no key, a made-up key) have no key to record them under: the
// metrics and the throttling count those.

// recordActivity records the request in its key's activity, when a key was
// found: ServeHTTP defers it first, so it runs after the reservation is
// settled (which sets the tokens and, on a route with tokens, the status).
func (h *Handler) recordActivity(x *exchange) {
	if x.key == nil || x.status == 0 || !h.activity.Listening() {
		return
	}
	q := activity.Request{KeyID: x.key.ID, At: x.now, Method: x.r.Method, Path: x.r.URL.Path,
		Status: x.status, Reason: x.reason, Tokens: x.tokens, Expires: x.key.ExpiresAt}
	if x.call != nil {
		q.Model = x.call.req.Model
	}
	h.activity.Record(q)
}

// serveNext hands an admitted request to the next handler, noting the
// status of the answer for the key's activity. Only a portal of the
// route's store reads the activity, and a portal listens to the tracker:
// without one, the next handler gets the writer as it came (no wrapper
// between it and Caddy's), and the request is not recorded (x.status
// stays 0).
func (h *Handler) serveNext(x *exchange, next caddyhttp.Handler) error {
	if !h.activity.Listening() {
		return next.ServeHTTP(x.w, x.r)
	}
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter = x.w
	err := next.ServeHTTP(sw, x.r)
	x.status = sw.status
	*sw = statusWriter{}
	statusWriters.Put(sw)
	if x.status == 0 {
		x.status = errorStatus(err)
	}
	return err
}

// errorStatus is the status Caddy answers a handler's error with: 200 for
// none (an answer with no body), the error's own, or 500.
func errorStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusInternalServerError
}

// statusWriters are reused: a request's exchange stays on its stack, and
// noting the status allocates nothing.
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// statusWriter notes the status of an answer. Unwrap lets
// http.ResponseController reach the writer beneath (to flush, hijack).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
