package portal

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// The playground sends one request through the gateway with a key the
// developer pastes, and explains the answer. The key is used for that one
// request: never stored, logged, or put back in the page.

const (
	playgroundTimeout = 30 * time.Second
	maxTryBody        = 64 << 10 // what the playground sends
	maxShownBody      = 16 << 10 // what it shows of the answer
)

// shownHeaders are the answer's headers the playground shows.
var shownHeaders = []string{"Content-Type", "RateLimit-Policy", "RateLimit", "Retry-After", "X-Should-Retry",
	"Deprecation", "Sunset", "WWW-Authenticate"}

type tryForm struct {
	Service, Method, Path, Body string
}

type tryResult struct {
	Status      int
	StatusText  string
	Headers     [][2]string
	Body        string
	Cut         bool
	Explanation string
	OK          bool
}

func (v *visit) playground(res *tryResult, f ...tryForm) {
	form := tryForm{Method: http.MethodGet}
	if len(f) > 0 {
		form = f[0]
	} else if len(v.s.policy.Services) > 0 {
		form.Service, form.Path = v.s.policy.Services[0].Name, v.s.policy.Services[0].Path
	}
	v.render(http.StatusOK, "playground.html", "playground", "Playground", map[string]any{
		"Services": v.s.policy.Services, "Form": form, "Result": res, "Methods": []string{"GET", "POST", "PUT", "PATCH", "DELETE"}})
}

func (v *visit) try() {
	f := tryForm{Service: v.r.PostFormValue("service"), Method: v.r.PostFormValue("method"),
		Path: strings.TrimSpace(v.r.PostFormValue("path")), Body: v.r.PostFormValue("body")}
	key := strings.TrimSpace(v.r.PostFormValue("key"))
	svc, ok := v.s.policy.service(f.Service)
	switch {
	case !ok:
		v.playground(&tryResult{Explanation: "Choose one of the listed services."}, f)
		return
	case !validMethod(f.Method):
		v.playground(&tryResult{Explanation: "Choose one of the listed methods."}, f)
		return
	case !underService(f.Path, svc):
		v.playground(&tryResult{Explanation: fmt.Sprintf("The path must start with %s, where the %s service is reached.", serviceRoot(svc), svc.Name)}, f)
		return
	case len(f.Body) > maxTryBody:
		v.playground(&tryResult{Explanation: fmt.Sprintf("The body is longer than the playground sends (%d KiB).", maxTryBody>>10)}, f)
		return
	}
	if key != "" {
		if _, ok := keystore.Check(key); !ok {
			// Not sent: the gateway would refuse it, and count the
			// failure against the portal's own address.
			v.playground(&tryResult{Explanation: "Not sent: this is not a whole key. A key starts with DEV_API_ or PROD_API_ and ends with a checksum; copy it again, whole."}, f)
			return
		}
	}
	if key != "" {
		id, ok, err := v.keyOwned(key)
		if err != nil {
			v.playground(&tryResult{Explanation: "Not sent: the key store is unavailable right now, so whose key this is could not be checked. Try again shortly."}, f)
			return
		}
		if !ok {
			// The playground sends from the portal's own address, which a
			// key's IP allowlist may admit: only the key's owner (or an
			// administrator, on the record) may send with it from here.
			v.playground(&tryResult{Explanation: "Not sent: this is not one of your keys. The playground sends only keys you own."}, f)
			return
		}
		if v.admin {
			v.audit(id, audit.Entry{"event": "key.playground", "key_id": id, "service": svc.Name, "method": f.Method, "path": clip(f.Path, 200)})
		}
	}
	res, err := v.s.send(v.r, svc, f, key)
	if err != nil {
		v.playground(&tryResult{Explanation: "The gateway could not be reached: " + err.Error()}, f)
		return
	}
	v.playground(res, f)
}

func validMethod(m string) bool {
	switch m {
	case "GET", "POST", "PUT", "PATCH", "DELETE":
		return true
	}
	return false
}

// serviceRoot is the first segment of a service's path, under which the
// playground may send: it is not a way to reach the rest of the site.
func serviceRoot(svc Service) string {
	seg, _, _ := strings.Cut(strings.TrimPrefix(svc.Path, "/"), "/")
	return "/" + seg + "/"
}

func underService(path string, svc Service) bool {
	u, err := url.Parse(path)
	return err == nil && svc.Path != "" && u.Scheme == "" && u.Host == "" && u.Path == u.EscapedPath() &&
		!strings.Contains(u.Path, "..") && !strings.Contains(u.Path, "//") && strings.HasPrefix(u.Path+"/", serviceRoot(svc))
}

// send makes the request to the gateway: the configured one, or the address
// that accepted the portal's request (the same Caddy).
func (s *Server) send(r *http.Request, svc Service, f tryForm, key string) (*tryResult, error) {
	target := s.backend.Gateway
	transport := &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: playgroundTimeout}
	if target == "" {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if local == nil {
			return nil, errors.New("the portal does not know the gateway's address; set playground_url")
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
			transport.TLSClientConfig = &tls.Config{ServerName: hostOnly(r.Host)}
		}
		target = scheme + "://" + r.Host
		addr := local.String()
		dialer := &net.Dialer{Timeout: 5 * time.Second}
		transport.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), playgroundTimeout)
	defer cancel()
	var body io.Reader
	if f.Body != "" {
		body = strings.NewReader(f.Body)
	}
	req, err := http.NewRequestWithContext(ctx, f.Method, strings.TrimSuffix(target, "/")+f.Path, body)
	if err != nil {
		return nil, errors.New("the request could not be made")
	}
	if f.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		value := key
		if svc.Scheme != "" {
			value = svc.Scheme + " " + key
		}
		req.Header.Set(svc.Header, value)
	}
	client := &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		// The error names the URL, never the key (it is in a header).
		return nil, errors.New(redact(err.Error(), key))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxShownBody+1))
	res := &tryResult{Status: resp.StatusCode, StatusText: http.StatusText(resp.StatusCode), OK: resp.StatusCode < 400}
	if len(data) > maxShownBody {
		data, res.Cut = data[:maxShownBody], true
	}
	res.Body = redact(string(data), key)
	for _, name := range shownHeaders {
		if val := resp.Header.Get(name); val != "" {
			res.Headers = append(res.Headers, [2]string{name, val})
		}
	}
	res.Explanation = explain(resp, data, key == "", s.now())
	return res, nil
}

// redact removes the key from what the page shows, should an upstream
// echo it.
func redact(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "…")
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// explain says in words what the gateway's answer means.
func explain(resp *http.Response, body []byte, noKey bool, now time.Time) string {
	code, reason, message := errorFields(body)
	// The gateway puts its RateLimit headers on every answer it counts, and
	// Deprecation on one admitted with an old secret: an answer with none
	// of them did not come through a gateway route that admitted a key.
	admitted := resp.Header.Get("RateLimit-Policy") != "" || resp.Header.Get("RateLimit") != "" || resp.Header.Get("Deprecation") != ""
	switch status := resp.StatusCode; {
	case status < 400 && !admitted && code == "":
		return fmt.Sprintf("%d %s, but not from the gateway: the path reached no gateway route, so no key was checked. "+
			"Check the path (a route for /echo/* does not take /echo).", status, http.StatusText(status))
	case status < 300:
		if resp.Header.Get("Deprecation") != "" {
			return "Admitted, with an old secret: this key was rotated and its old secret stops working at " + resp.Header.Get("Sunset") + ". Switch to the new one."
		}
		return "Admitted: the gateway accepted the key and the service answered."
	case status == http.StatusUnauthorized:
		switch code {
		case "missing_key":
			if noKey {
				return "401: no key was sent. Paste a key in the key field."
			}
			return "401: the gateway found no key where this route reads it."
		case "invalid_key":
			return "401: the gateway does not know this key. Check that it was copied whole; a key is shown only once, so a lost key must be rotated or replaced."
		case "revoked_key":
			return "401: this key has been revoked and will never work again. Create a new one."
		case "expired_key":
			return "401: this key has expired, or it is an old secret whose rotation grace is over. Use the key's current secret, or create a new key."
		}
	case status == http.StatusForbidden:
		what := map[string]string{
			"method":           "the key's role or permissions do not allow this method on this path",
			"service":          "the key may not use this service; add the service to the key",
			"ip":               "the key may not be used from this address (its IP allowlist); note that the playground's requests come from the portal's server",
			"key_type":         "this route does not accept this type of key (development or production)",
			"path":             "the path has dot segments or encoded slashes, so permissions cannot be checked",
			"pending_approval": "the key waits for an administrator's approval",
			"paused":           "the key is paused; resume it on its page",
			"model":            "the key may not use this model",
		}[reason]
		if what != "" {
			return "403: the key is valid, but " + what + "."
		}
	case status == http.StatusTooManyRequests:
		when := resetText(resp.Header.Get("Retry-After"), now)
		switch code {
		case "quota_exceeded":
			return "429: the key's daily quota is used up; it resets " + when + "."
		case "rate_limited":
			if reason == "failed_auth" {
				return "429: the address sending the request is throttled after too many failed keys; this is the portal's own address, shared by every developer using the playground, not your key. Try again " + when + ", or call the gateway directly."
			}
			return "429: the key sent requests faster than its rate allows; it may send again " + when + "."
		}
		return "429: too many requests (" + code + "); try again " + when + "."
	case status == http.StatusServiceUnavailable && code == "unavailable":
		return "503: the gateway could not check the key because its key store is unreachable; this says nothing about the key. Retry shortly."
	}
	if message != "" {
		return fmt.Sprintf("%d: %s", resp.StatusCode, message)
	}
	return fmt.Sprintf("%d %s: the key was accepted by the gateway or not involved; this is the service's own answer.", resp.StatusCode, http.StatusText(resp.StatusCode))
}

func resetText(retryAfter string, now time.Time) string {
	secs, err := strconv.Atoi(retryAfter)
	if err != nil || secs < 0 {
		return "later"
	}
	at := now.Add(time.Duration(secs) * time.Second).UTC()
	return fmt.Sprintf("in %s (at %s)", (time.Duration(secs) * time.Second).String(), at.Format("2006-01-02 15:04:05 UTC"))
}

// errorFields reads code, reason and message from any of the gateway's
// error formats.
func errorFields(body []byte) (code, reason, message string) {
	var doc struct {
		Error  json.RawMessage `json:"error"`
		Code   string          `json:"code"`
		Reason string          `json:"reason"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return "", "", ""
	}
	code, reason = doc.Code, doc.Reason
	var inner struct {
		Code, Reason, Message string
	}
	if json.Unmarshal(doc.Error, &inner) == nil {
		if inner.Code != "" {
			code = inner.Code
		}
		if inner.Reason != "" {
			reason = inner.Reason
		}
		message = inner.Message
	} else {
		_ = json.Unmarshal(doc.Error, &message)
	}
	return code, reason, message
}

// keyOwned finds the key's id, and whether the visitor may send it from
// the playground: their own key (its current or a rotated-out secret), or
// any key for an administrator. ok is false for a key the store does not
// know.
func (v *visit) keyOwned(key string) (id string, ok bool, err error) {
	d := keystore.Sum(key)
	if v.s.backend.Lookup != nil {
		m, err := v.s.backend.Lookup(v.r.Context(), d)
		if err != nil {
			return "", false, err
		}
		if m.Key == nil {
			return "", false, nil
		}
		return m.Key.ID, v.admin || v.holds(keystore.Record{Owner: m.Key.Owner, Team: m.Key.Team}), nil
	}
	// No lookup: the visitor's own records.
	hash := d.Encode()
	recs, err := v.myRecords(v.r.Context())
	for _, rec := range recs {
		if rec.Hash == hash {
			id = rec.ID
		}
		for _, p := range rec.PreviousHashes {
			if p.Hash == hash {
				id = rec.ID
			}
		}
	}
	return id, id != "", err
}
