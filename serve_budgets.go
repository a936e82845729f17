package apikey

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/headers"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/tokens"
	"github.com/moodmnky/caddy-apikey/usage"
)

// Token budgets on routes with tokens: the request's body is read (bounded)
// for its model and the most tokens it may use; an estimate is reserved
// before the upstream is called, and settled to what the upstream reports
// when the answer ends, read as it streams past.

// Defaults for routes with tokens.
const (
	defaultMaxTokens      = 1024
	defaultMaxRequestBody = 1 << 20
	// promptBytesPerToken estimates a prompt's tokens from its body's size.
	promptBytesPerToken = 4
	// bodyReadTimeout bounds reading a request body on a route with tokens.
	bodyReadTimeout = 30 * time.Second
	// maxReservation caps a reservation: more than any budget, within what
	// the counter stores count exactly (2^53).
	maxReservation = 1 << 50
	// settleTimeout bounds the settlement, which runs after the client may
	// have gone.
	settleTimeout = 5 * time.Second
)

// tokenLimits are a route's token settings, resolved.
type tokenLimits struct {
	format    tokens.Format
	daily     [keystore.Prod + 1]int64
	perMinute [keystore.Prod + 1]int64
	maxTokens int64
	maxBody   int64
	store     ratelimit.TokenStore
	// inflightPerKey and inflightTotal cap the bodies held (serve_inflight.go).
	inflightPerKey, inflightTotal int64
	// logs are when the route last logged each warning of settle.
	logs tokenLogs
}

// tokenLogs are when a route last logged each of settle's warnings (Unix
// ns): an upstream that always misreports, or a Redis outage, must not
// write a line per request. They are the route's: a reload starts them
// again, and routes log apart.
type tokenLogs struct {
	absurd, settle, unread atomic.Int64
}

// provisionTokens resolves Tokens, TokenQuota, TokenRate, DefaultMaxTokens
// and MaxRequestBody.
func (h *Handler) provisionTokens() error {
	if h.Tokens == "" {
		if len(h.TokenQuota) > 0 || len(h.TokenRate) > 0 || h.DefaultMaxTokens != 0 || h.MaxRequestBody != 0 || h.MaxInflightBody != nil {
			return errors.New("token_quota, token_rate, default_max_tokens, max_request_body and max_inflight_body need tokens openai|ollama on the route")
		}
		return nil
	}
	f, err := tokens.ParseFormat(h.Tokens)
	if err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	store, ok := h.counters.(ratelimit.TokenStore)
	if !ok {
		return fmt.Errorf("tokens: the counter store %T cannot keep token budgets", h.counters)
	}
	tl := &tokenLimits{format: f, maxTokens: defaultMaxTokens, maxBody: defaultMaxRequestBody, store: store}
	for field, m := range map[string]map[string]int64{"token_quota": h.TokenQuota, "token_rate": h.TokenRate} {
		for name, n := range m {
			t, err := keystore.ParseType(name)
			if err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
			if n < 0 {
				return fmt.Errorf("%s: %s: must not be negative", field, name)
			}
			if field == "token_quota" {
				tl.daily[t] = n
			} else {
				tl.perMinute[t] = n
			}
		}
	}
	if h.DefaultMaxTokens < 0 || h.MaxRequestBody < 0 {
		return errors.New("default_max_tokens and max_request_body must be positive")
	}
	if h.DefaultMaxTokens > 0 {
		tl.maxTokens = h.DefaultMaxTokens
	}
	if h.MaxRequestBody > 0 {
		tl.maxBody = h.MaxRequestBody
	}
	if err := h.provisionInflight(tl); err != nil {
		return err
	}
	h.tokens = tl
	return nil
}

// policy is the token budgets of a key for a request for model.
func (tl *tokenLimits) policy(k *keystore.Key, t keystore.Type, window ratelimit.Window, model string) ratelimit.TokenPolicy {
	p := ratelimit.TokenPolicy{Daily: tl.daily[t], PerMinute: tl.perMinute[t], Window: window}
	if k.HasTokensPerDay {
		p.Daily = k.TokensPerDay
	}
	if k.HasTokensPerMinute {
		p.PerMinute = k.TokensPerMinute
	}
	if model != "" {
		if pattern, n, ok := k.ModelBudget(model); ok {
			p.Model, p.ModelDaily = pattern, n
		}
	}
	return p
}

// llmCall is one admitted request on a route with tokens.
type llmCall struct {
	req     tokens.Request
	hide    bool // the gateway asked for the usage chunk the client did not
	policy  ratelimit.TokenPolicy
	reserve int64
	res     ratelimit.TokenResult
	bodyLen int
	// hold is the body's bytes, counted until the request ends.
	hold bodyHold
	// tw is the answer, once the request was handed on.
	tw *tokenWriter
	// settled: settle ran (it runs once).
	settled bool
}

// reserve reads the body of a request on a route with tokens, checks its
// model, and reserves its estimate. A refused request lets go of its body
// at once (refuse settles it); an admitted one when it ends.
func (h *Handler) reserve(x *exchange) refusal {
	tl, r, k := h.tokens, x.r, x.key
	// Its start, if the override check read it, is counted again with the
	// whole body.
	x.peek.release()
	call := &llmCall{hold: bodyHold{bodies: h.held, keyID: k.ID, perKey: tl.inflightPerKey, total: tl.inflightTotal}}
	x.call = call
	if r.Body != nil && r.Body != http.NoBody {
		if f := h.readBody(x); f.refused() {
			return f
		}
	}
	// A key limited to models may name only those, and must name one:
	// an upstream that falls back to a default model would otherwise
	// serve any.
	if k.RestrictsModels() && !allowsModels(k, r, call) {
		return forbidden(h.denials.model)
	}
	call.policy = tl.policy(k, x.presented, h.limits.window, call.req.Model)
	if call.policy.IsZero() {
		return refusal{}
	}
	res, err := tl.store.Reserve(r.Context(), k.ID, call.policy, call.reserve)
	if err != nil {
		return denied(h.denials.unavailable)
	}
	call.res = res
	if !res.Uncounted {
		headers.WriteTokenLimits(x.w.Header(), res, res.Now)
	}
	if !res.Allowed {
		return h.tokensExhausted(call)
	}
	return refusal{}
}

// readBody reads the request's body, held in max_inflight_body, for its
// model and limit, and puts it back for the upstream (asking an OpenAI
// stream for its usage).
func (h *Handler) readBody(x *exchange) refusal {
	tl, r, call := h.tokens, x.r, x.call
	// A body that trickles in must not hold the gateway: its read has a
	// deadline of its own (the server's read timeouts may be off).
	rc := http.NewResponseController(x.w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	body, err := readHeldBody(r.Body, r.ContentLength, tl.maxBody, &call.hold)
	if err != nil {
		f := h.unreadBody(err)
		// What is left of the body is read and dropped, up to as much
		// again as the route reads, so that the client, which may be
		// writing it still, gets the answer and the connection stays in
		// step; past that the connection closes after the answer. (Caddy
		// wraps the body, so Go's server cannot tell it was closed early:
		// it would read the rest as the client's next request.)
		f.unread = !drained(r.Body, tl.maxBody)
		_ = rc.SetReadDeadline(time.Time{})
		r.Body.Close()
		return f
	}
	_ = rc.SetReadDeadline(time.Time{})
	r.Body.Close()
	call.bodyLen = len(bytes.TrimSpace(body))
	if call.bodyLen > 0 {
		if call.req, err = tokens.ParseRequest(tl.format, body); err != nil {
			// A body that is no JSON object at all (a multipart upload, a
			// blob) names a model the gateway cannot read.
			if x.key.RestrictsModels() && errors.Is(err, tokens.ErrNotJSON) && bytes.TrimSpace(body)[0] != '{' {
				return forbidden(h.denials.model)
			}
			// Ambiguous bodies too: the upstream could read another model
			// or limit than the gateway checked.
			return invalidRequest(http.StatusBadRequest, reasonBody,
				"This route counts LLM tokens and needs a JSON body: "+err.Error()+".")
		}
		if tl.format == tokens.OpenAI && call.req.Stream && !call.req.IncludeUsage && tokens.TakesStreamOptions(r.URL.Path) {
			// Ask for the usage chunk; Scanner hides it from the client.
			if body, err = tokens.AskUsage(body); err != nil {
				return invalidRequest(http.StatusBadRequest, reasonBody, "The request body could not be read: "+err.Error()+".")
			}
			call.hide = true
		}
		call.reserve = tl.estimate(call.req, len(body))
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return refusal{}
}

// drained reads and drops what is left of a body, up to limit bytes, and
// tells whether that was all of it.
func drained(body io.Reader, limit int64) bool {
	_, err := io.CopyN(io.Discard, body, limit+1)
	return err == io.EOF
}

// unreadBody is the refusal of a body readHeldBody did not read whole.
func (h *Handler) unreadBody(err error) refusal {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return h.tooLarge()
	case errors.Is(err, errKeyBodies):
		return tooMany(decisionRateLimited, reasonInflightBody, fmt.Sprintf(
			"This key's requests in flight hold as many request bodies as the gateway holds for one key (%d bytes); retry when some have finished.",
			h.tokens.inflightPerKey), time.Second, false)
	case errors.Is(err, errAllBodies):
		return denied(h.denials.allBodies)
	default:
		return invalidRequest(http.StatusBadRequest, reasonBody, "The request body could not be read.")
	}
}

// estimate is the tokens a request reserves: its completion limit (the
// route's default_max_tokens when it sets none) for each completion it
// asks for, and its prompt at promptBytesPerToken. Clients send huge
// limits to mean "none" (2^53-1 from JavaScript): the sum saturates at
// maxReservation, which no budget holds, so such a request gets 429, not
// an error.
func (tl *tokenLimits) estimate(req tokens.Request, bodyLen int) int64 {
	reserve := min(req.MaxTokens, maxReservation)
	if reserve == 0 {
		reserve = tl.maxTokens
	}
	// n and best_of ask for that many completions.
	if req.Copies > 1 {
		reserve = min(reserve, maxReservation/req.Copies) * req.Copies
	}
	return min(reserve+(int64(bodyLen)+promptBytesPerToken-1)/promptBytesPerToken, maxReservation)
}

// tooLarge refuses a body over max_request_body.
func (h *Handler) tooLarge() refusal {
	return invalidRequest(http.StatusRequestEntityTooLarge, reasonBodyTooLarge,
		fmt.Sprintf("The request body is over %d bytes, the most this route reads.", h.tokens.maxBody))
}

// allowsModels reports whether a key limited to models may send r: every
// model it names, in its body (tokens.ModelFields, a Modelfile's FROM
// lines) and in "model" query parameters (the realtime API's WebSocket
// upgrade), is one of the key's. A request with a body or an upgrade must
// name one; a body that asks for a model the gateway cannot name (an
// Ollama create from uploaded files), or a query the gateway cannot read,
// is refused.
func allowsModels(k *keystore.Key, r *http.Request, call *llmCall) bool {
	if call.req.Unnamed {
		return false
	}
	named := len(call.req.Models)
	for _, m := range call.req.Models {
		if !k.AllowsModel(m) {
			return false
		}
	}
	if r.URL.RawQuery != "" {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return false
		}
		for _, m := range q["model"] {
			if !k.AllowsModel(m) {
				return false
			}
			named++
		}
	}
	// An upgrade (HTTP/1.1 Upgrade, or HTTP/2's extended CONNECT) opens a
	// socket whose frames the gateway does not read.
	return named > 0 || (call.bodyLen == 0 && r.Header.Get("Upgrade") == "" && r.Method != http.MethodConnect)
}

// tokensExhausted answers a reservation that does not fit: 429 while a
// budget is spent; 400 when it is larger than a whole budget, so that no
// client retries a request no retry can pass (docs/choices.md).
func (h *Handler) tokensExhausted(call *llmCall) refusal {
	res := call.res
	var reason, what string
	var u ratelimit.Usage
	switch res.DeniedBy {
	case ratelimit.MinuteTokens:
		reason, what, u = reasonTokensMinute, "per-minute token budget", res.Minute
	case ratelimit.ModelTokens:
		reason, what, u = reasonTokensModel, "daily token budget for "+call.policy.Model, res.Model
	default:
		reason, what, u = reasonTokensDaily, "daily token budget", res.Daily
	}
	// Larger than a whole budget: the one that refused, or another that
	// applies (a spent daily budget may hide a per-minute one it exceeds).
	for _, b := range [...]struct {
		reason string
		limit  int64
	}{{reason, u.Limit}, {reasonTokensDaily, call.policy.Daily}, {reasonTokensMinute, call.policy.PerMinute}, {reasonTokensModel, call.policy.ModelDaily}} {
		if b.limit <= 0 || call.reserve <= b.limit {
			continue
		}
		switch b.reason {
		case reasonTokensDaily:
			what = "daily token budget"
		case reasonTokensMinute:
			what = "per-minute token budget"
		case reasonTokensModel:
			what = "daily token budget for " + call.policy.Model
		}
		limitField := "max_tokens"
		if h.tokens.format == tokens.Ollama {
			limitField = "options.num_predict"
		}
		f := invalidRequest(http.StatusBadRequest, b.reason, fmt.Sprintf(
			"This request may use up to %d tokens, more than the key's whole %s (%d), so no retry can pass; ask for fewer with %s.",
			call.reserve, what, b.limit, limitField))
		f.final = true
		return f
	}
	msg := fmt.Sprintf("This request may use up to %d tokens and the key's %s has %d of %d left; it resets at %s.",
		call.reserve, what, u.Remaining, u.Limit, u.Reset.UTC().Format(time.RFC3339))
	// No retry helps a daily budget soon.
	return tooMany(decisionQuotaExceeded, reason, msg, res.RetryAfter, res.DeniedBy != ratelimit.MinuteTokens)
}

// tokenWriter passes the upstream's answer on as it comes, reading the
// usage it reports.
type tokenWriter struct {
	http.ResponseWriter
	format  tokens.Format
	hide    bool
	scan    *tokens.Scanner
	status  int
	written bool
	// dec decodes an answer the upstream compressed although it was asked
	// for identity (see serve_decode.go); nil for a plain answer.
	dec *decoder
	// unread: the answer is in an encoding the gateway cannot decode; it
	// passes on unread, and is charged its reservation.
	unread bool
}

func (tw *tokenWriter) WriteHeader(status int) {
	if !tw.written && status >= 200 {
		tw.written = true
		tw.status = status
		hdr := tw.Header()
		ct := hdr.Get("Content-Type")
		stream := strings.HasPrefix(ct, "text/event-stream") || strings.HasPrefix(ct, "application/x-ndjson")
		tw.scan = tokens.NewScanner(tw.format, stream, tw.hide)
		if ce := hdr["Content-Encoding"]; len(ce) > 0 && !identity(ce) {
			if tw.dec = newDecoder(tw, ce); tw.dec == nil {
				tw.unread = true
			}
		}
		if (stream && tw.hide) || tw.dec != nil {
			// A chunk may be dropped, or the answer is decoded: the
			// length announced would be wrong.
			hdr.Del("Content-Length")
		}
	}
	tw.ResponseWriter.WriteHeader(status)
}

func (tw *tokenWriter) Write(p []byte) (int, error) {
	if !tw.written {
		tw.WriteHeader(http.StatusOK)
	}
	switch {
	case tw.dec != nil:
		return tw.dec.write(p)
	case tw.unread:
		return tw.ResponseWriter.Write(p)
	}
	out := tw.scan.Feed(p)
	if len(out) > 0 {
		if _, err := tw.ResponseWriter.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush passes flushes on, so streams stay incremental.
func (tw *tokenWriter) Flush() {
	if tw.dec != nil {
		tw.dec.flush()
		return
	}
	_ = http.NewResponseController(tw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (tw *tokenWriter) Unwrap() http.ResponseWriter { return tw.ResponseWriter }

// settlement is what an answer is charged, read when it ended.
type settlement struct {
	prompt, completion, charged int64
	// reported: the answer reported its usage (sanely).
	reported bool
	// answered: the upstream answered (a status and headers went on).
	answered bool
	// status is the upstream's status, when answered.
	status int
	// absurd: the answer reported impossible numbers, not believed.
	absurd bool
}

// finish ends the answer (what the scanner still holds goes on, a decoder
// is waited for) and returns what to charge: the tokens reported; none for
// an upstream refusal with no report, or for a request the upstream never
// answered; otherwise (a stream cut by the client or the upstream before
// its report, an upstream or endpoint that does not report) the
// reservation, or the content chunks the answer passed when more.
func (tw *tokenWriter) finish(call *llmCall) settlement {
	if tw.scan == nil {
		return settlement{} // nothing was answered: the request failed before the upstream
	}
	if tw.dec != nil {
		tw.dec.close()
	}
	if rest := tw.scan.Finish(); len(rest) > 0 {
		_, _ = tw.ResponseWriter.Write(rest)
	}
	st := settlement{answered: true, status: tw.status, absurd: tw.scan.Absurd()}
	st.prompt, st.completion, st.reported = tw.scan.Usage()
	chunks := tw.scan.Chunks()
	tw.scan.Release()
	tw.scan = nil
	switch {
	case st.reported:
		st.charged = st.prompt + st.completion
	case tw.status >= 400 && !st.absurd:
	default:
		// A stream cut before its report passed at least a token a chunk: a
		// client that stops reading before the usage does not pay less.
		st.charged = max(call.reserve, chunks)
	}
	return st
}

// identityEncoding is what a route with tokens asks its upstream for:
// answers the gateway reads as they stream (shared, never modified).
var identityEncoding = []string{"identity"}

// proxyLLM hands the request on, asking the upstream for an answer it does
// not compress, through a writer that reads the usage as it passes. The
// settlement is not here: ServeHTTP defers settle before the tokens are
// reserved, so it runs however the request ends (see settle).
func (h *Handler) proxyLLM(x *exchange, next caddyhttp.Handler) error {
	r, call := x.r, x.call
	call.tw = &tokenWriter{ResponseWriter: x.w, format: h.tokens.format, hide: call.hide}
	// The upstream is asked for identity: an answer compressed by the
	// upstream could not be read as it streams. The client's own
	// Accept-Encoding comes back afterwards, for the access log.
	accept, had := r.Header["Accept-Encoding"]
	r.Header["Accept-Encoding"] = identityEncoding
	defer func() {
		if had {
			r.Header["Accept-Encoding"] = accept
		} else {
			delete(r.Header, "Accept-Encoding")
		}
	}()
	err := next.ServeHTTP(call.tw, r)
	if err != nil {
		// Unless the upstream answered (settle then notes its status).
		x.status = errorStatus(err)
	}
	return err
}

// settle settles the request's reservation, exactly once: ServeHTTP defers
// it before reserve, so it runs whatever happens next: a refusal before the
// upstream (the reservation is released), an upstream error, a client that
// goes away mid-stream (reverse_proxy then panics with
// http.ErrAbortHandler, which goes on after this ran), or an answer that
// ends. A cut answer is charged what finish says, and counted as a missing
// report when its endpoint should have reported. refuse calls it before it
// answers, so the tokens are back when the client reads the refusal. The
// body held is let go of here too. No reservation (a route without
// tokens, or a request refused before reserve) is fine.
func (h *Handler) settle(x *exchange) {
	call := x.call
	if call == nil || call.settled {
		return
	}
	call.settled = true
	defer call.hold.release()
	r, k := x.r, x.key
	var st settlement
	if call.tw != nil {
		st = call.tw.finish(call)
	}
	h.warnAboutAnswer(k, call, st)
	if !call.policy.IsZero() && call.res.Allowed && !call.res.Uncounted {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), settleTimeout)
		serr := h.tokens.store.Settle(ctx, k.ID, call.policy, call.res.Reservation, st.charged)
		cancel()
		if serr != nil && tokenLogDue(&h.tokens.logs.settle) {
			h.logger.Warn("a token settlement could be neither made nor queued for retry; the reservation stays charged until the store gives it back (logged at most every 10 s)",
				zap.String("key_id", k.ID), zap.Int64("reserved", call.reserve), zap.Error(serr))
		}
	}
	if !st.answered {
		return // refused before the upstream, or the upstream never answered
	}
	x.status, x.tokens = st.status, st.prompt+st.completion
	if st.reported {
		h.usage.AddTokens(k.ID, h.Service, r.Method, usage.Endpoint(r.URL.Path, h.usageDepth), x.now, st.prompt, st.completion)
	}
	// A missing report: an answer that should have reported and did not.
	missing := !st.reported && st.status < 300 && tokens.Reports(h.tokens.format, r.Method, r.URL.Path)
	countTokens(h.Service, st.prompt, st.completion, st.charged, st.reported, missing)
	h.tokenWarnings(k, call, st.charged)
}

// warnAboutAnswer logs an answer whose usage was not believed or not
// read, at most every 10 s per kind.
func (h *Handler) warnAboutAnswer(k *keystore.Key, call *llmCall, st settlement) {
	if st.absurd && tokenLogDue(&h.tokens.logs.absurd) {
		h.logger.Warn("the upstream reported an impossible token count; the reservation was charged instead (logged at most every 10 s)",
			zap.String("key_id", k.ID), zap.Int64("reserved", call.reserve))
	}
	if call.tw != nil && call.tw.unread && tokenLogDue(&h.tokens.logs.unread) {
		h.logger.Warn("the upstream compressed its answer in an encoding the gateway cannot read although asked for identity; the reservation was charged (logged at most every 10 s)",
			zap.String("key_id", k.ID), zap.Strings("content_encoding", call.tw.Header()["Content-Encoding"]), zap.Int64("reserved", call.reserve))
	}
}

func tokenLogDue(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(10*time.Second) && last.CompareAndSwap(prev, now)
}

// tokenWarnings sends apikey_token_warning at 80 % and 90 % of a daily
// token budget, once per key and window (once per cluster on Redis).
func (h *Handler) tokenWarnings(k *keystore.Key, call *llmCall, charged int64) {
	if (!h.events.on() && !h.activity.Listening()) || call.res.Uncounted || call.policy.Daily <= 0 {
		return
	}
	d := call.res.Daily
	used := d.Limit - d.Remaining - call.reserve + charged
	level := h.warningDue(k.ID+"\x00tokens", used, d.Limit, d.Reset)
	if level > 0 {
		h.activity.Publish(activity.KeyEvent{KeyID: k.ID, Event: "key.tokens", Percent: level, Used: used, Limit: d.Limit, Reset: d.Reset, At: time.Now()})
	}
	// The budget used up: told to the key's owner (the gateway's event for
	// it is the refusal, apikey_denied with reason tokens_daily).
	if used >= d.Limit && h.activity.Listening() && h.markSent(k.ID+"\x00tokens_spent", d.Reset, 100) {
		h.activity.Publish(activity.KeyEvent{KeyID: k.ID, Event: "key.tokens", Percent: 100, Used: used, Limit: d.Limit, Reset: d.Reset, At: time.Now()})
	}
	if level > 0 && h.events.on() {
		h.emitOnce(eventTokenWarning, k.ID, "tokens_warning"+strconv.FormatInt(level, 10), d.Reset,
			map[string]any{"key_id": k.ID, "service": h.Service, "percent": level, "used": used, "limit": d.Limit,
				"reset": d.Reset.UTC().Format(time.RFC3339)})
	}
}
