package keystore

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strings"
	"unsafe"
)

// Digest is the SHA-256 of a whole key string. Records hold digests, never keys.
type Digest [sha256.Size]byte

const digestPrefix = "sha256:"

// Sum hashes a presented key. It reads the string's bytes in place: a
// []byte conversion would copy every key to the heap, and SHA-256 only reads.
func Sum(key string) Digest {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(key), len(key)))
}

// Encode returns the digest as written in key records: "sha256:" and 64
// lowercase hex digits. It is deliberately not String, so that a digest
// passed to a logger or fmt by mistake prints redacted.
func (d Digest) Encode() string {
	return digestPrefix + hex.EncodeToString(d[:])
}

// Hex returns the digest as 64 lowercase hex digits, for stores that index
// records by it (Redis key names). Never for logs.
func (d Digest) Hex() string { return hex.EncodeToString(d[:]) }

// String keeps digests out of logs and error messages.
func (Digest) String() string { return "sha256:<redacted>" }

// Equal compares two digests in constant time.
func (d Digest) Equal(other Digest) bool {
	return subtle.ConstantTimeCompare(d[:], other[:]) == 1
}

var errDigestFormat = errors.New(`must be "sha256:" followed by 64 lowercase hex digits`)

// ParseDigest reads a digest as written in key records. Its errors never
// repeat the input.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	hexPart, ok := strings.CutPrefix(s, digestPrefix)
	if !ok || len(hexPart) != 2*sha256.Size || strings.ToLower(hexPart) != hexPart {
		return d, errDigestFormat
	}
	if _, err := hex.Decode(d[:], []byte(hexPart)); err != nil {
		return d, errDigestFormat
	}
	return d, nil
}
