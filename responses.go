package apikey

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/moodmnky/caddy-apikey/headers"
)

// Decisions: the "code" of an error body, and the outcome logged for a request.
const (
	decisionMissingKey  = "missing_key"
	decisionInvalidKey  = "invalid_key"
	decisionExpiredKey  = "expired_key"
	decisionRevokedKey  = "revoked_key"
	decisionForbidden   = "forbidden"
	decisionUnavailable = "unavailable"

	decisionRateLimited   = "rate_limited"
	decisionQuotaExceeded = "quota_exceeded"
)

// Reasons a 403 gives.
const (
	reasonMethod  = "method"
	reasonService = "service"
	reasonIP      = "ip"
	reasonKeyType = "key_type"
)

// denial is one refusal, its body encoded once when the config loads so that
// refusing a request costs no JSON encoding.
type denial struct {
	status       int
	code         string
	reason       string
	body         []byte
	authenticate string // WWW-Authenticate, for 401s
	retryAfter   string // Retry-After, for 503s
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
}

func newDenial(status int, code, reason, message string) *denial {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false) // keep "<key>" readable in messages
	_ = enc.Encode(errorBody{Error: errorDetail{Status: status, Code: code, Reason: reason, Message: message}})
	return &denial{status: status, code: code, reason: reason, body: body.Bytes()}
}

// denials holds every refusal a handler can give.
type denials struct {
	missing, invalid, expired, rotatedOut, revoked *denial
	method, service, ip, keyType                   *denial
	unavailable                                    *denial
}

func newDenials(service string, allowTypes []string, keyFrom []headers.KeyLocation) denials {
	realm := service
	if realm == "" {
		realm = "apikey"
	}
	challenge := `Bearer realm="` + strings.ReplaceAll(realm, `"`, "") + `"`
	invalidChallenge := challenge + `, error="invalid_token"`

	where := make([]string, len(keyFrom))
	for i, loc := range keyFrom {
		where[i] = `"` + loc.String() + `"`
	}

	d := denials{
		missing: newDenial(http.StatusUnauthorized, decisionMissingKey, "",
			"No API key was sent; send it as "+strings.Join(where, " or ")+"."),
		invalid: newDenial(http.StatusUnauthorized, decisionInvalidKey, "",
			"The API key is not valid; check that it was copied whole and has not been replaced."),
		expired: newDenial(http.StatusUnauthorized, decisionExpiredKey, "",
			"The API key has expired; ask the gateway's operator for a new key."),
		rotatedOut: newDenial(http.StatusUnauthorized, decisionExpiredKey, "",
			"The API key was replaced in a rotation and its grace period has ended; use the new key."),
		revoked: newDenial(http.StatusUnauthorized, decisionRevokedKey, "",
			"The API key has been revoked; ask the gateway's operator for a new key."),
		method: newDenial(http.StatusForbidden, decisionForbidden, reasonMethod,
			"The key's role or permissions do not allow this method on this path."),
		service: newDenial(http.StatusForbidden, decisionForbidden, reasonService,
			"The key is not allowed to use the "+realm+" service."),
		ip: newDenial(http.StatusForbidden, decisionForbidden, reasonIP,
			"The key may not be used from this client address."),
		keyType: newDenial(http.StatusForbidden, decisionForbidden, reasonKeyType,
			"This endpoint accepts only "+strings.Join(allowTypes, " or ")+" keys."),
		unavailable: newDenial(http.StatusServiceUnavailable, decisionUnavailable, "",
			"The key service is unavailable, so the key could not be checked; retry shortly."),
	}
	d.missing.authenticate = challenge
	for _, den := range []*denial{d.invalid, d.expired, d.rotatedOut, d.revoked} {
		den.authenticate = invalidChallenge
	}
	d.unavailable.retryAfter = strconv.Itoa(5)
	return d
}

// write sends the refusal. The body never holds the key. The header values
// share one allocation; they cannot be shared between responses, since
// Caddy's header directive may edit values in place.
func (d *denial) write(w http.ResponseWriter) {
	vals := make([]string, 3)
	vals[0], vals[1] = "application/json", "no-store"
	h := w.Header()
	h["Content-Type"] = vals[0:1:1]
	h["Cache-Control"] = vals[1:2:2]
	switch {
	case d.authenticate != "":
		vals[2] = d.authenticate
		h["Www-Authenticate"] = vals[2:3:3]
	case d.retryAfter != "":
		vals[2] = d.retryAfter
		h["Retry-After"] = vals[2:3:3]
	}
	w.WriteHeader(d.status)
	_, _ = w.Write(d.body)
}
