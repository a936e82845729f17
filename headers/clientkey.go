// Package headers reads client keys from requests and writes the upstream's
// credentials onto them.
package headers

import (
	"fmt"
	"net/http"
	"strings"
)

// KeyLocation is a request header a client key may be read from.
type KeyLocation struct {
	// Header is the request header's name, e.g. "Authorization" or "X-API-Key".
	Header string `json:"header"`
	// Scheme, when set, must lead the header's value and is stripped, e.g.
	// "Bearer" for "Authorization: Bearer <key>". Compared case-insensitively.
	Scheme string `json:"scheme,omitempty"`
}

// DefaultKeyLocations are tried when a route names none: a bearer token,
// then X-API-Key.
var DefaultKeyLocations = []KeyLocation{
	{Header: "Authorization", Scheme: "Bearer"},
	{Header: "X-API-Key"},
}

// Canonical returns loc with its header name in canonical form, so lookups
// need not canonicalize on every request.
func (loc KeyLocation) Canonical() (KeyLocation, error) {
	if loc.Header == "" || strings.ContainsAny(loc.Header, " \t:") {
		return loc, fmt.Errorf("invalid header name %q", loc.Header)
	}
	if strings.ContainsAny(loc.Scheme, " \t") {
		return loc, fmt.Errorf("invalid scheme %q: must be one word", loc.Scheme)
	}
	loc.Header = http.CanonicalHeaderKey(loc.Header)
	return loc, nil
}

// String describes where the key goes, for messages to developers.
func (loc KeyLocation) String() string {
	if loc.Scheme == "" {
		return loc.Header + ": <key>"
	}
	return loc.Header + ": " + loc.Scheme + " <key>"
}

// value returns the key carried by one header value, if the scheme fits.
func (loc KeyLocation) value(v string) (string, bool) {
	if loc.Scheme != "" {
		n := len(loc.Scheme)
		if len(v) <= n || !strings.EqualFold(v[:n], loc.Scheme) || (v[n] != ' ' && v[n] != '\t') {
			return "", false
		}
		v = v[n+1:]
	}
	v = strings.TrimSpace(v)
	return v, v != ""
}

// TakeKey reads the client key from the first location that carries one,
// and removes every key location's header, whichever held the key used, so
// that no client key (not even a second one) reaches the upstream. locs
// must be canonical. found is false when no location carries a value.
func TakeKey(h http.Header, locs []KeyLocation) (key string, found bool) {
	for _, loc := range locs {
		vals := h[loc.Header]
		if len(vals) == 0 {
			continue
		}
		if k, ok := loc.value(vals[0]); ok {
			key, found = k, true
			break
		}
	}
	RemoveKeys(h, locs)
	return key, found
}

// RemoveKeys removes every key location's header.
func RemoveKeys(h http.Header, locs []KeyLocation) {
	for _, loc := range locs {
		delete(h, loc.Header)
	}
}
