package apikey

import (
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// refusal is how a request is refused: its status, decision and reason,
// its body (built when the config loaded, or from message), and how it is
// recorded. The zero refusal refuses nothing.
type refusal struct {
	status   int
	decision string
	reason   string
	// denial is the refusal's answer, built when the config loaded; nil
	// for answers built per request from message.
	denial  *denial
	message string
	// retryAfter is sent as Retry-After on a 429.
	retryAfter time.Duration
	// final adds "x-should-retry: false": no retry passes soon.
	final bool
	// limits: the answer carries the key's rate-limit headers, read
	// without spending (a 403 to an authenticated key).
	limits bool
	// unread: the answer goes out without reading the request's body, and
	// the connection is closed after it.
	unread bool
	// failure counts the request as a failed authentication of its
	// client address.
	failure bool
	// quiet: only counted in the metrics; the refusal was logged once
	// already (a throttled address).
	quiet bool
}

// refused reports whether f refuses the request.
func (f refusal) refused() bool { return f.status != 0 }

// denied refuses with d, an answer built when the config loaded. A 401
// counts against the client address.
func denied(d *denial) refusal {
	return refusal{status: d.status, decision: d.code, reason: d.reason, denial: d, failure: d.status == http.StatusUnauthorized}
}

// forbidden refuses an authenticated key with d: the answer carries the
// key's rate-limit headers.
func forbidden(d *denial) refusal {
	f := denied(d)
	f.limits = true
	return f
}

// tooMany refuses with 429 and a message that says when to come back.
// final marks a refusal no retry can fix within seconds (a daily quota).
func tooMany(decision, reason, message string, retryAfter time.Duration, final bool) refusal {
	return refusal{status: http.StatusTooManyRequests, decision: decision, reason: reason, message: message,
		retryAfter: retryAfter, final: final}
}

// invalidRequest refuses a request whose body the route cannot use.
func invalidRequest(status int, reason, message string) refusal {
	return refusal{status: status, decision: decisionInvalidRequest, reason: reason, message: message}
}

// refuse answers the request with f, after recording it: in the metrics,
// and, unless quiet, in the log, the audit log and the events (refused).
// A token reservation is settled first, so the tokens are back when the
// client reads the refusal.
func (h *Handler) refuse(x *exchange, f refusal) error {
	h.settle(x)
	x.status, x.reason = f.status, f.reason
	if x.reason == "" {
		x.reason = f.decision
	}
	if f.unread {
		answerUnread(x.w)
	}
	if f.quiet {
		h.counted(x, decisionIndexes[f.decision])
	} else {
		h.refused(x, f.decision, f.reason)
		if f.failure {
			h.failed(x)
		}
	}
	if f.limits {
		h.limitHeaders(x)
	}
	if f.denial != nil {
		f.denial.write(x.w)
		return nil
	}
	hdr := x.w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Cache-Control"] = []string{"no-store"}
	if f.status == http.StatusTooManyRequests {
		headers.SetRetryAfter(hdr, f.retryAfter)
	}
	// The OpenAI SDKs sleep for a Retry-After of up to a minute; past that,
	// no quick retry can pass, so say so (they obey x-should-retry).
	if f.final || f.retryAfter > time.Minute {
		hdr["X-Should-Retry"] = []string{"false"}
	}
	x.w.WriteHeader(f.status)
	_, _ = x.w.Write(appendErrorBody(make([]byte, 0, 128+len(f.message)), h.format, f.status, f.decision, f.reason, f.message))
	return nil
}

// limitHeaders writes the key's rate-limit headers, read without spending,
// on a refusal of an authenticated key. A store shared between instances
// answers from this instance's last view of the key, not with a round trip
// for every refusal; with no view, no headers.
func (h *Handler) limitHeaders(x *exchange) {
	var res ratelimit.Result
	if lp, ok := h.counters.(ratelimit.LocalPeeker); ok {
		if res, ok = lp.PeekLocal(x.key.ID, x.policy); !ok {
			return
		}
	} else {
		var err error
		if res, err = h.counters.Peek(x.r.Context(), x.key.ID, x.policy); err != nil {
			return
		}
	}
	if !res.Uncounted {
		headers.WriteRateLimit(x.w.Header(), res, res.Now)
	}
}

// answerUnread makes a refusal go out without waiting for the request's
// body: Go's server would otherwise read up to 256 KiB of it before writing
// the answer. The connection is closed after the answer instead of read.
func answerUnread(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
	w.Header().Set("Connection", "close")
}

// throttle refuses a client address, or network, that is throttled after
// failed authentications. Logged, audited and sent as an event once, when
// the block began; here only counted.
func (h *Handler) throttle(x *exchange) refusal {
	if (h.failures == nil || !h.failures.Active()) && (h.wide == nil || !h.wide.Active()) {
		return refusal{}
	}
	wait, blocked, wide := h.blocked(x)
	if !blocked {
		return refusal{}
	}
	msg := throttleMessage(wait)
	if wide {
		msg = wideThrottleMessage(wait)
	}
	f := tooMany(decisionRateLimited, reasonFailedAuth, msg, wait, false)
	f.quiet = true
	return f
}

// busy refuses a key check because the client address already has as many
// key checks waiting on the key source as it may: 429, counted against the
// address like a failed authentication, so that a flood of made-up keys
// ends in a block rather than in calls to the source.
func (h *Handler) busy(x *exchange) refusal {
	f := tooMany(decisionRateLimited, reasonKeyChecksInFlight,
		"Too many keys from this address are being checked at once; retry in 1 s.", time.Second, false)
	// Blocked by the wave it belongs to: counted, not logged again.
	_, f.quiet, _ = h.blocked(x)
	f.failure = true
	return f
}

// failed counts a failed authentication against the client address and
// its network, and records the block it may start.
func (h *Handler) failed(x *exchange) {
	if h.failures != nil && h.failures.Fail(x.client, h.failLimit) {
		h.throttled(x, ratelimit.ClientPrefix(x.client), h.failLimit)
	}
	if h.wide != nil {
		if p := h.widePrefix(x.client); h.wide.FailPrefix(p, h.wideLimit) {
			h.throttled(x, p, h.wideLimit)
		}
	}
}

// blocked reports whether the client address, or its network, is
// throttled after failed authentications, and for how long; wide is true
// for its network.
func (h *Handler) blocked(x *exchange) (wait time.Duration, blocked, wide bool) {
	if h.failures != nil {
		if wait, blocked = h.failures.Blocked(x.client, h.failLimit); blocked {
			return wait, true, false
		}
	}
	if h.wide != nil && h.wide.Active() {
		if wait, blocked = h.wide.BlockedPrefix(h.widePrefix(x.client), h.wideLimit); blocked {
			return wait, true, true
		}
	}
	return 0, false, false
}

// counted records a decision in the metrics.
func (h *Handler) counted(x *exchange, decision int) {
	shard := shardOf(x.r)
	h.requests.inc(shard, decision, x.presented)
	if h.perKey && x.key != nil {
		metrics.requestsByKey.WithLabelValues(x.key.ID, h.Service, decisions[decision]).Inc()
	}
	metrics.duration.observe(shard, time.Since(x.now))
}

// refused records a refusal everywhere it is recorded: the metrics, the
// log (at info), the audit log and the events. Never the key or its hash;
// the key id when the key is known. Repeated refusals are bounded: a known
// key's 10 a minute per kind (serve_refusals.go), unknown clients' summarised
// (serve_refusals_summary.go).
func (h *Handler) refused(x *exchange, decision, reason string) {
	h.counted(x, decisionIndexes[decision])
	r, k := x.r, x.key
	var repeated int64
	if k != nil {
		var write bool
		if write, repeated = h.refusals.admit(refusalKey{k.ID, decision, reason}, x.now); !write {
			return
		}
	} else if h.anon != nil && !h.anon.admit(decision, reason, x.client, h.widePrefix(x.client), x.now) {
		return
	}
	if c := h.logger.Check(zapcore.InfoLevel, "request denied"); c != nil {
		fields := []zap.Field{
			zap.String("decision", decision),
			zap.String("method", loggedMethod(r.Method)),
			zap.String("path", loggedPath(r.URL.Path)),
			zap.Stringer("client_ip", x.client),
		}
		if reason != "" {
			fields = append(fields, zap.String("reason", reason))
		}
		if k != nil {
			fields = append(fields, zap.String("key_id", k.ID))
		}
		if repeated > 0 {
			fields = append(fields, zap.Int64("repeated", repeated))
		}
		c.Write(fields...)
	}
	if h.audit == nil && !h.events.on() {
		return
	}
	data := map[string]any{"decision": decision, "service": h.Service, "method": loggedMethod(r.Method),
		"path": loggedPath(r.URL.Path), "client_ip": x.client.String()}
	if reason != "" {
		data["reason"] = reason
	}
	if k != nil {
		data["key_id"] = k.ID
	}
	if repeated > 0 {
		data["repeated"] = repeated
	}
	if h.audit != nil {
		entry := audit.Entry{"event": "request.denied"}
		for name, v := range data {
			entry[name] = v
		}
		h.audit.Log(entry)
	}
	if h.events.on() {
		h.events.emit(eventDenied, data)
	}
}
