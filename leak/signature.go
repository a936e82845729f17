package leak

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// The headers a GitHub report is signed in.
const (
	KeyIDHeader     = "Github-Public-Key-Identifier"
	SignatureHeader = "Github-Public-Key-Signature"
	// HMACHeader carries an internal scanner's signature: hex HMAC-SHA256
	// of the raw body, optionally written "sha256=<hex>".
	HMACHeader = "X-Signature-256"
)

// ErrSignature is any failed signature check. Its message never says more
// than which check failed.
var ErrSignature = errors.New("signature check failed")

// PublicKeys are the keys a scanner signs its reports with, by identifier.
type PublicKeys map[string]*ecdsa.PublicKey

// ParsePublicKeys reads the JSON document GitHub serves at
// https://api.github.com/meta/public_keys/secret_scanning:
//
//	{"public_keys": [{"key_identifier": "…", "key": "-----BEGIN PUBLIC KEY-----…", "is_current": true}]}
//
// Every key must be an ECDSA P-256 public key in PEM; the document must
// name at least one.
func ParsePublicKeys(doc []byte) (PublicKeys, error) {
	var d struct {
		PublicKeys []struct {
			KeyIdentifier string `json:"key_identifier"`
			Key           string `json:"key"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("not a public keys document: %v", err)
	}
	if len(d.PublicKeys) == 0 {
		return nil, errors.New("the document names no public keys")
	}
	keys := make(PublicKeys, len(d.PublicKeys))
	for i, k := range d.PublicKeys {
		if k.KeyIdentifier == "" {
			return nil, fmt.Errorf("public key %d has no key_identifier", i)
		}
		block, _ := pem.Decode([]byte(k.Key))
		if block == nil {
			return nil, fmt.Errorf("public key %q: key is not PEM", k.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key %q: %v", k.KeyIdentifier, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve.Params().Name != "P-256" {
			return nil, fmt.Errorf("public key %q: not an ECDSA P-256 key", k.KeyIdentifier)
		}
		keys[k.KeyIdentifier] = ec
	}
	return keys, nil
}

// Verify checks a GitHub signature: sig is the base64 ASN.1 ECDSA signature
// of SHA-256(body) by the key named keyID.
func (keys PublicKeys) Verify(keyID, sig string, body []byte) error {
	pub := keys[keyID]
	if pub == nil {
		return fmt.Errorf("%w: unknown public key identifier", ErrSignature)
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) == 0 {
		return fmt.Errorf("%w: the signature is not base64", ErrSignature)
	}
	digest := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, digest[:], raw) {
		return fmt.Errorf("%w: the signature does not match the body", ErrSignature)
	}
	return nil
}

// VerifyHMAC checks an internal scanner's signature: the hex HMAC-SHA256 of
// body under secret, with or without a "sha256=" prefix, compared in
// constant time.
func VerifyHMAC(secret []byte, sig string, body []byte) error {
	sig = strings.TrimPrefix(sig, "sha256=")
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: the signature is not hex SHA-256", ErrSignature)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: the signature does not match the body", ErrSignature)
	}
	return nil
}
