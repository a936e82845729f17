// Package leak speaks the secret scanning partner protocol: it reads a
// scanner's report of keys found in public places, checks that the report
// comes from the scanner, and builds the feedback that tells the scanner
// which tokens were real.
//
// GitHub's program (https://docs.github.com/code-security/secret-scanning/
// secret-scanning-partner-program) posts a JSON array of matches, signed
// with ECDSA P-256 over the raw body; an internal scanner can sign with a
// shared HMAC secret instead. What to do with a true positive (revoke,
// pause, notify) is the caller's: this package holds no keys.
package leak

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Limits on a report. A report beyond them is refused whole, so nothing in
// it is acted on.
const (
	// MaxBody is the largest report body read, in bytes.
	MaxBody = 1 << 20
	// MaxItems is the most matches one report may carry.
	MaxItems = 1000
	// maxField is the longest url, type or source kept from a match.
	maxField = 2048
)

// Item is one match in a report.
type Item struct {
	// Token is the string the scanner found. It is a secret: never log it.
	Token string `json:"token"`
	// Type is the scanner's name for the pattern that matched.
	Type string `json:"type"`
	// URL is where the token was found.
	URL string `json:"url"`
	// Source is where the scanner looked: "content", "commit", "npm", ...
	Source string `json:"source"`
}

// ParseReport reads a report body: a JSON array of matches, each a JSON
// object. It refuses a body that is not such an array, that has more than
// MaxItems matches, or whose fields are not strings or are longer than a
// URL can reasonably be. Its errors never quote the body, which may hold
// tokens: they say which match and which field.
func ParseReport(body []byte) ([]Item, error) {
	if len(body) > MaxBody {
		return nil, fmt.Errorf("the report is %d bytes, more than %d", len(body), MaxBody)
	}
	// The first byte says what the body is; the decoder would say it
	// with the body's text in its error (a number too large, say).
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, errNotArray
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // the '['
		return nil, errNotJSON(err)
	}
	var items []Item
	for dec.More() {
		if len(items) == MaxItems {
			return nil, fmt.Errorf("the report has more than %d matches", MaxItems)
		}
		i := len(items)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errNotJSON(err)
		}
		if raw[0] != '{' {
			return nil, fmt.Errorf("match %d is not a JSON object", i)
		}
		var it Item
		if err := json.Unmarshal(raw, &it); err != nil {
			var typ *json.UnmarshalTypeError
			if errors.As(err, &typ) {
				return nil, fmt.Errorf("match %d: its %s is not a string", i, fieldName(typ.Field))
			}
			return nil, errNotJSON(err)
		}
		if it.Token == "" {
			return nil, fmt.Errorf("match %d has no token", i)
		}
		if len(it.Token) > maxField || len(it.URL) > maxField || len(it.Type) > maxField || len(it.Source) > maxField {
			return nil, fmt.Errorf("match %d has a field longer than %d bytes", i, maxField)
		}
		items = append(items, it)
	}
	if _, err := dec.Token(); err != nil { // the ']'
		return nil, errNotJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("the body has more after its JSON array")
	}
	if len(items) == 0 {
		return nil, errors.New("the report has no matches")
	}
	return items, nil
}

// errNotArray is the error of a body that is not a JSON array: an object,
// a string, a number, null, or nothing.
var errNotArray = errors.New("the body must be a JSON array of token reports")

// errNotJSON says where the body stops being JSON, but not the text
// around it, which may be a token.
func errNotJSON(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("the body is not valid JSON (at byte %d)", syn.Offset)
	}
	return errors.New("the body is not valid JSON")
}

// fieldName names a match's field for an error: one of Item's, never a
// name from the body.
func fieldName(field string) string {
	switch field {
	case "token", "type", "url", "source":
		return field
	}
	return "field"
}

// Label is the scanner's verdict on one token.
type Label string

// The labels GitHub's program takes.
const (
	TruePositive  Label = "true_positive"
	FalsePositive Label = "false_positive"
)

// Feedback is one entry of the answer to a report: which token (by its
// SHA-256, never the token) and whether it was one of ours.
type Feedback struct {
	// TokenHash is the hex SHA-256 of the token, as GitHub's program names it.
	TokenHash string `json:"token_hash"`
	// TokenType is the type the report gave.
	TokenType string `json:"token_type"`
	// Label says whether the token is a real key of this gateway.
	Label Label `json:"label"`
}

// TokenHash is the hex SHA-256 of a token, the way the feedback names it.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// WellFormed reports whether a reported token is shaped like one of this
// gateway's keys, checksum included: a token that is not is a false
// positive without any lookup.
func WellFormed(token string) (keystore.Type, bool) { return keystore.Check(token) }
