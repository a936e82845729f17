package admin

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/moodmnky/caddy-apikey/internal/unescape"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// checkRequest refuses, before any routing, a request that names what no
// endpoint may be given: a key or a key's hash where a key id belongs, a
// bad escape, an id no key may have.
func checkRequest(r *http.Request) error {
	// A key (or its hash) pasted where a key id belongs is refused before
	// anything else, and never repeated: not in the answer, not in a log
	// line, not in the audit log.
	if looksSecret(r.RequestURI) || looksSecret(r.URL.Path) || looksSecret(r.URL.RawQuery) {
		return apiError(http.StatusBadRequest, "that looks like a key or a key's hash, not a key id; never send a key to the admin API (this answer does not repeat it)")
	}
	// The path is split as sent, and each part unescaped on its own, so
	// that an id is the exact bytes given ("%2F" is a slash in an id, not a
	// step of the path; the mux matches the same way). Nothing is trimmed
	// or normalised: an id that no key may have (white space around it, a
	// character that does not show) is refused, never read as another
	// key's id.
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.EscapedPath(), "/apikey/"), "/")
	parts := strings.Split(path, "/")
	for i := range parts {
		part, err := url.PathUnescape(parts[i])
		if err != nil {
			return apiError(http.StatusBadRequest, "the path holds a bad escape")
		}
		parts[i] = part
	}
	if len(parts) > 1 && (parts[0] == "keys" || parts[0] == "quota") && parts[1] != "" {
		if err := givenID(parts[1]); err != nil {
			return err
		}
	}
	for _, name := range []string{"id", "key"} {
		if q := r.URL.Query(); q.Get(name) != "" {
			if err := givenID(q.Get(name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// givenID refuses an id no key may have (see keystore.CheckID) with 400,
// naming the character: the admin API acts on exactly the id it is given,
// so " k_abc" or "k_abc" and a zero-width space are never read as k_abc.
func givenID(id string) error {
	if err := keystore.CheckID(id); err != nil {
		return apiError(http.StatusBadRequest, "key id %s: %v; ids are matched exactly, and no key has such an id", strconv.QuoteToASCII(id), err)
	}
	return nil
}

// looksSecret reports whether a request URI (or part of one) holds
// something shaped like a key or a key's hash (keystore.LooksLikeSecret),
// percent-encoded once, twice or not at all.
func looksSecret(s string) bool {
	for range 4 {
		if keystore.LooksLikeSecret(s) {
			return true
		}
		decoded := unescape.Lenient(s)
		if decoded == s {
			return false
		}
		s = decoded
	}
	return false
}
