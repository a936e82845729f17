// Package keystore holds the API key format, key records, and the sources
// that look keys up by their hash.
package keystore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"unsafe"
)

// Type is the kind of a key, told by its prefix.
type Type uint8

// Key types. The zero Type means "not set" in a record.
const (
	Dev Type = iota + 1
	Prod
)

const (
	devPrefix  = "DEV_API_"
	prodPrefix = "PROD_API_"

	// RandomLen is the number of random base62 characters in a key.
	RandomLen = 30
	// ChecksumLen is the number of base62 characters of the CRC-32 checksum.
	ChecksumLen = 6

	base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// String returns "dev" or "prod".
func (t Type) String() string {
	switch t {
	case Dev:
		return "dev"
	case Prod:
		return "prod"
	}
	return ""
}

// Prefix returns the prefix keys of this type start with.
func (t Type) Prefix() string {
	switch t {
	case Dev:
		return devPrefix
	case Prod:
		return prodPrefix
	}
	return ""
}

// ParseType reads "dev" or "prod".
func ParseType(s string) (Type, error) {
	switch s {
	case "dev":
		return Dev, nil
	case "prod":
		return Prod, nil
	}
	return 0, fmt.Errorf("unknown key type %q (want dev or prod)", s)
}

// base62Value maps a byte to its base62 digit value, or -1.
var base62Value = func() (v [256]int8) {
	for i := range v {
		v[i] = -1
	}
	for i := 0; i < len(base62); i++ {
		v[base62[i]] = int8(i)
	}
	return v
}()

// Check reports the type of a presented key if it is well formed: a known
// prefix, exactly 36 base62 characters after it, and a checksum that matches.
// It does no lookup: a well-formed key may still be unknown.
func Check(key string) (Type, bool) {
	var t Type
	switch {
	case strings.HasPrefix(key, devPrefix):
		t = Dev
	case strings.HasPrefix(key, prodPrefix):
		t = Prod
	default:
		return 0, false
	}
	body := key[len(t.Prefix()):]
	if len(body) != RandomLen+ChecksumLen {
		return 0, false
	}
	for i := 0; i < len(body); i++ {
		if base62Value[body[i]] < 0 {
			return 0, false
		}
	}
	var sum uint64
	for i := RandomLen; i < len(body); i++ {
		sum = sum*62 + uint64(base62Value[body[i]])
	}
	if sum != uint64(checksum(key[:len(key)-ChecksumLen])) {
		return 0, false
	}
	return t, true
}

// HasKnownPrefix reports whether s starts like a key, well formed or not.
func HasKnownPrefix(s string) bool {
	return strings.HasPrefix(s, devPrefix) || strings.HasPrefix(s, prodPrefix)
}

// MaskedHint is a key as far as its record's hint shows it, "DEV_API_…abcd":
// the prefix of the record's type (a dev key's when it names none) and the
// secret's last HintLength characters; "" for a record without a hint.
func MaskedHint(rec Record) string {
	if rec.Hint == "" {
		return ""
	}
	prefix := devPrefix
	if rec.Type == Prod.String() {
		prefix = prodPrefix
	}
	return prefix + "…" + rec.Hint
}

// Generate returns a new key of type t, with its random part from crypto/rand.
func Generate(t Type) (string, error) {
	prefix := t.Prefix()
	if prefix == "" {
		return "", fmt.Errorf("unknown key type %d", t)
	}
	buf := make([]byte, 0, len(prefix)+RandomLen+ChecksumLen)
	buf = append(buf, prefix...)
	var random [64]byte
	for len(buf) < len(prefix)+RandomLen {
		if _, err := rand.Read(random[:]); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range random {
			// 248 = 4*62: rejecting the rest keeps every digit equally likely.
			if b < 248 && len(buf) < len(prefix)+RandomLen {
				buf = append(buf, base62[b%62])
			}
		}
	}
	buf = appendChecksum(buf, checksum(string(buf)))
	return string(buf), nil
}

// appendChecksum writes sum in base62, most significant digit first,
// left-padded with '0' to ChecksumLen characters.
func appendChecksum(dst []byte, sum uint32) []byte {
	var digits [ChecksumLen]byte
	n := uint64(sum)
	for i := ChecksumLen - 1; i >= 0; i-- {
		digits[i] = base62[n%62]
		n /= 62
	}
	return append(dst, digits[:]...)
}

// checksum is CRC-32 (IEEE) of s, read in place: a []byte conversion
// would copy every presented key, and CRC-32 only reads.
func checksum(s string) uint32 {
	return crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// Diagnose says what is wrong with a presented key, for people checking a
// key by hand; Check is the fast yes or no.
func Diagnose(key string) (Type, error) {
	var t Type
	switch {
	case key == "":
		return 0, errors.New("empty")
	case strings.HasPrefix(key, devPrefix):
		t = Dev
	case strings.HasPrefix(key, prodPrefix):
		t = Prod
	default:
		return 0, fmt.Errorf("unknown prefix: keys start with %s or %s", devPrefix, prodPrefix)
	}
	body := key[len(t.Prefix()):]
	if len(body) != RandomLen+ChecksumLen {
		return t, fmt.Errorf("wrong length: %d characters after the prefix, want %d", len(body), RandomLen+ChecksumLen)
	}
	for i := 0; i < len(body); i++ {
		if base62Value[body[i]] < 0 {
			return t, fmt.Errorf("character %d is not in 0-9A-Za-z", len(t.Prefix())+i+1)
		}
	}
	if _, ok := Check(key); !ok {
		return t, errors.New("the checksum does not match: the key was mistyped or cut")
	}
	return t, nil
}

// Find calls yield for each well-formed key in text, in order, with the
// offset of its first byte; it stops when yield returns false. A key counts
// only when it stands alone: the byte before its prefix and the byte after
// its checksum are not base62 or '_' (so a key inside a longer token is not
// one), and its checksum matches (so a random string of the same shape is
// never reported: one in 62^6 would pass by chance, and CRC-32 of the rest
// must agree). Find reads text as bytes; it allocates only the keys it
// yields.
func Find(text []byte, yield func(offset int, key string) bool) {
	const shortest = len(devPrefix) + RandomLen + ChecksumLen
	for i := 0; i+shortest <= len(text); {
		j := bytes.Index(text[i:], apiMark)
		if j < 0 {
			return
		}
		// text[i+j:] starts with "_API_"; the prefix is DEV or PROD before it.
		at := i + j
		i = at + 1
		var start int
		switch {
		case at >= 3 && string(text[at-3:at]) == "DEV":
			start = at - 3
		case at >= 4 && string(text[at-4:at]) == "PROD":
			start = at - 4
		default:
			continue
		}
		if start > 0 && isKeyByte(text[start-1]) {
			continue
		}
		end := at + len("_API_") + RandomLen + ChecksumLen
		if end > len(text) || (end < len(text) && isKeyByte(text[end])) {
			continue
		}
		if _, ok := Check(string(text[start:end])); !ok {
			continue
		}
		if !yield(start, string(text[start:end])) {
			return
		}
		i = end
	}
}

var apiMark = []byte("_API_")

// isKeyByte reports whether c could continue a key or an identifier.
func isKeyByte(c byte) bool { return c == '_' || base62Value[c] >= 0 }

// LooksLikeSecret reports whether s holds something shaped like a key (a
// key's prefix, in any case, anywhere) or like a key's hash ("sha256:" in
// any case, or 64 hex digits in a row): text that must never be repeated in
// a message, a log line, a listing or a URL. It reads s as it is; a caller
// that takes percent-encoded text checks each decoding too.
func LooksLikeSecret(s string) bool {
	if hasAPIMark(s) {
		for i := 0; i+len(devPrefix) <= len(s); i++ {
			if hasPrefixFold(s[i:], devPrefix) || hasPrefixFold(s[i:], prodPrefix) {
				return true
			}
		}
	}
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' {
			if run++; run >= 64 {
				return true
			}
			continue
		}
		run = 0
		if (c == 's' || c == 'S') && hasPrefixFold(s[i:], "sha256:") {
			return true
		}
	}
	return false
}

// MaskSecrets replaces anything shaped like a key in s (a key's prefix, in
// any case, and the base62 characters after it, up to a key's length) with
// "[key]": for text a client chose, such as a path, on its way to a log
// line, an audit entry or an event. It allocates only when s holds one.
func MaskSecrets(s string) string {
	if !hasAPIMark(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		n := 0
		switch {
		case hasPrefixFold(s[i:], devPrefix):
			n = len(devPrefix)
		case hasPrefixFold(s[i:], prodPrefix):
			n = len(prodPrefix)
		}
		if n == 0 {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i + n
		for j < len(s) && j < i+n+RandomLen+ChecksumLen && base62Value[s[j]] >= 0 {
			j++
		}
		b.WriteString("[key]")
		i = j
	}
	return b.String()
}

// hasAPIMark reports whether s holds "_api_" in any case, without
// allocating: every key prefix does.
func hasAPIMark(s string) bool {
	for i := 0; i+5 <= len(s); i++ {
		if s[i] == '_' && s[i+4] == '_' && (s[i+1]|0x20) == 'a' && (s[i+2]|0x20) == 'p' && (s[i+3]|0x20) == 'i' {
			return true
		}
	}
	return false
}

// hasPrefixFold is strings.HasPrefix, ASCII case folded, for an upper-case
// or lower-case ASCII prefix.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		a, b := s[i], prefix[i]
		if a != b && !('a' <= a|0x20 && a|0x20 <= 'z' && a|0x20 == b|0x20) {
			return false
		}
	}
	return true
}
