package apikey

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moodmnky/caddy-apikey/headers"
)

// errorFormat is the shape of a refusal's JSON body, chosen per route so
// that each ecosystem's client libraries show the gateway's message.
type errorFormat uint8

const (
	// formatDefault: {"error": {"status", "code", "reason", "message"}}.
	formatDefault errorFormat = iota
	// formatOpenAI: {"error": {"message", "type", "param", "code"}}, as
	// OpenAI's API and SDKs have it.
	formatOpenAI
	// formatOllama: {"error": "<message>", "code", "reason"}, as Ollama's
	// API and clients have it.
	formatOllama
)

var errorFormatNames = map[string]errorFormat{"default": formatDefault, "openai": formatOpenAI, "ollama": formatOllama}

func parseErrorFormat(s string) (errorFormat, error) {
	f, ok := errorFormatNames[s]
	if !ok {
		return 0, fmt.Errorf("unknown error format %q (want default, openai or ollama)", s)
	}
	return f, nil
}

// defaultErrorFormats is the error format a service's route gets when it
// names none: Ollama's clients read a string "error".
var defaultErrorFormats = map[string]errorFormat{"ollama": formatOllama, "openai": formatOpenAI}

// openAIType is the OpenAI error "type" for a status.
func openAIType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return "invalid_request_error"
	}
	return "server_error"
}

// appendErrorBody appends a refusal's JSON body in format f. It encodes by
// hand, so a 429 built per request costs no reflection.
func appendErrorBody(b []byte, f errorFormat, status int, code, reason, message string) []byte {
	switch f {
	case formatOpenAI:
		b = append(b, `{"error":{"message":`...)
		b = appendJSONString(b, message)
		b = append(b, `,"type":"`...)
		b = append(b, openAIType(status)...)
		b = append(b, `","param":null,"code":"`...)
		b = append(b, code...)
		b = append(b, '"')
		if reason != "" {
			b = append(b, `,"reason":"`...)
			b = append(b, reason...)
			b = append(b, '"')
		}
		b = append(b, "}}\n"...)
	case formatOllama:
		b = append(b, `{"error":`...)
		b = appendJSONString(b, message)
		b = append(b, `,"code":"`...)
		b = append(b, code...)
		b = append(b, '"')
		if reason != "" {
			b = append(b, `,"reason":"`...)
			b = append(b, reason...)
			b = append(b, '"')
		}
		b = append(b, "}\n"...)
	default:
		b = append(b, `{"error":{"status":`...)
		b = strconv.AppendInt(b, int64(status), 10)
		b = append(b, `,"code":"`...)
		b = append(b, code...)
		b = append(b, '"')
		if reason != "" {
			b = append(b, `,"reason":"`...)
			b = append(b, reason...)
			b = append(b, '"')
		}
		b = append(b, `,"message":`...)
		b = appendJSONString(b, message)
		b = append(b, "}}\n"...)
	}
	return b
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// denial is one refusal, its body encoded once when the config loads so that
// refusing a request costs no encoding.
type denial struct {
	status       int
	code         string
	reason       string
	body         []byte
	authenticate string // WWW-Authenticate, for 401s
	retryAfter   string // Retry-After, for 503s
}

func newDenial(f errorFormat, status int, code, reason, message string) *denial {
	return &denial{status: status, code: code, reason: reason, body: appendErrorBody(nil, f, status, code, reason, message)}
}

// denials holds every refusal a handler can give.
type denials struct {
	missing, invalid, expired, rotatedOut, revoked      *denial
	method, service, ip, keyType, path, pending, paused *denial
	methodUnreadable                                    *denial
	keyBodies, allBodies                                *denial // bodies held over max_inflight_body
	model                                               *denial
	unavailable                                         *denial
}

func newDenials(f errorFormat, service string, allowTypes []string, keyFrom []headers.KeyLocation) denials {
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
		missing: newDenial(f, http.StatusUnauthorized, decisionMissingKey, "",
			"No API key was sent; send it as "+strings.Join(where, " or ")+"."),
		invalid: newDenial(f, http.StatusUnauthorized, decisionInvalidKey, "",
			"The API key is not valid; check that it was copied whole and has not been replaced."),
		expired: newDenial(f, http.StatusUnauthorized, decisionExpiredKey, "",
			"The API key has expired; ask the gateway's operator for a new key."),
		rotatedOut: newDenial(f, http.StatusUnauthorized, decisionExpiredKey, "",
			"The API key was replaced in a rotation and its grace period has ended; use the new key."),
		revoked: newDenial(f, http.StatusUnauthorized, decisionRevokedKey, "",
			"The API key has been revoked; ask the gateway's operator for a new key."),
		method: newDenial(f, http.StatusForbidden, decisionForbidden, reasonMethod,
			"The key's role or permissions do not allow this method on this path."),
		methodUnreadable: newDenial(f, http.StatusForbidden, decisionForbidden, reasonMethod,
			"The request body could hold a method override (_method) that the gateway cannot read: its Content-Encoding is not gzip, deflate or zstd, it is corrupt, it is longer than 64 KiB compressed or 4 MiB decompressed, or its charset is not ASCII-compatible; and the key's role or permissions do not allow every method it could ask for. Send the body uncompressed, in UTF-8."),
		service: newDenial(f, http.StatusForbidden, decisionForbidden, reasonService,
			"The key is not allowed to use the "+realm+" service."),
		ip: newDenial(f, http.StatusForbidden, decisionForbidden, reasonIP,
			"The key may not be used from this client address."),
		path: newDenial(f, http.StatusForbidden, decisionForbidden, reasonPath,
			"The request path has dot segments or encoded slashes, backslashes or dots, so the key's path permissions cannot be checked against what the upstream would see; send the path in its plain form."),
		model: newDenial(f, http.StatusForbidden, decisionForbidden, reasonModel,
			"The key may not use the model this request asks for."),
		pending: newDenial(f, http.StatusForbidden, decisionForbidden, reasonPending,
			"The key waits for an administrator's approval; it works once approved."),
		paused: newDenial(f, http.StatusForbidden, decisionForbidden, reasonPaused,
			"The key is paused; it works again once its owner or an administrator resumes it, or it is rotated."),
		keyType: newDenial(f, http.StatusForbidden, decisionForbidden, reasonKeyType,
			"This endpoint accepts only "+strings.Join(allowTypes, " or ")+" keys."),
		unavailable: newDenial(f, http.StatusServiceUnavailable, decisionUnavailable, "",
			"The key service is unavailable, so the key could not be checked; retry shortly."),
		keyBodies: newDenial(f, http.StatusTooManyRequests, decisionRateLimited, reasonInflightBody,
			"This key's requests in flight hold as many request bodies as the gateway holds for one key; retry when some have finished."),
		allBodies: allBodiesDenial(f),
	}
	d.keyBodies.retryAfter = "1"
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
