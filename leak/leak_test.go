package leak

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// publicKeysDoc builds a document of GitHub's shape for one key.
func publicKeysDoc(t *testing.T, id string, pub *ecdsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{
		"key_identifier": id,
		"key":            string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"is_current":     true,
	}}})
	return doc
}

func sign(t *testing.T, priv *ecdsa.PrivateKey, body []byte) string {
	t.Helper()
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func TestGitHubSignature(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys, err := ParsePublicKeys(publicKeysDoc(t, "kid1", &priv.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`[{"token":"x","type":"t","url":"u","source":"content"}]`)
	sig := sign(t, priv, body)
	if err := keys.Verify("kid1", sig, body); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, check := range map[string]error{
		"changed body":    keys.Verify("kid1", sig, append([]byte(" "), body...)),
		"unknown key id":  keys.Verify("kid2", sig, body),
		"another signer":  keys.Verify("kid1", sign(t, other, body), body),
		"not base64":      keys.Verify("kid1", "!!", body),
		"empty signature": keys.Verify("kid1", "", body),
	} {
		if !errors.Is(check, ErrSignature) {
			t.Errorf("%s: %v, want a signature error", name, check)
		}
	}
}

func TestPublicKeysRefuseOtherCurves(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := ParsePublicKeys(publicKeysDoc(t, "k", &p384.PublicKey)); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Fatalf("a P-384 key: %v", err)
	}
	for _, doc := range []string{`{}`, `{"public_keys": []}`, `{"public_keys": [{"key_identifier": "k", "key": "nope"}]}`, `[`} {
		if _, err := ParsePublicKeys([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", doc)
		}
	}
}

func TestHMACSignature(t *testing.T) {
	secret := []byte("scanner secret")
	body := []byte(`[{"token":"x"}]`)
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	good := hex.EncodeToString(mac.Sum(nil))
	if err := VerifyHMAC(secret, good, body); err != nil {
		t.Fatal(err)
	}
	if err := VerifyHMAC(secret, "sha256="+good, body); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"changed body": VerifyHMAC(secret, good, []byte(`[]`)),
		"other secret": VerifyHMAC([]byte("other"), good, body),
		"short":        VerifyHMAC(secret, good[:10], body),
		"not hex":      VerifyHMAC(secret, strings.Repeat("z", 64), body),
		"no signature": VerifyHMAC(secret, "", body),
	} {
		if !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseReport(t *testing.T) {
	key, _ := keystore.Generate(keystore.Prod)
	items, err := ParseReport([]byte(`[{"token":"` + key + `","type":"caddy_apikey_prod","url":"https://github.com/o/r/blob/x/a.env","source":"content"}]`))
	if err != nil || len(items) != 1 || items[0].Token != key || items[0].Source != "content" {
		t.Fatalf("%d items, %v", len(items), err)
	}
	if typ, ok := WellFormed(items[0].Token); !ok || typ != keystore.Prod {
		t.Fatal("a generated key is not well formed")
	}
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"token":"a"},`, MaxItems+1), ",") + "]"
	for name, body := range map[string]string{
		"not an array":    `{"token":"` + key + `"}`,
		"empty":           `[]`,
		"no token":        `[{"type":"t"}]`,
		"too many":        many,
		"too large":       `[{"token":"` + strings.Repeat("a", MaxBody) + `"}]`,
		"long url":        `[{"token":"a","url":"` + strings.Repeat("u", 3000) + `"}]`,
		"torn":            `[{"token":"` + key,
		"token as number": `[{"token":` + "1" + `}]`,
	} {
		_, err := ParseReport([]byte(body))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error carries the token", name)
		}
	}
}

func TestTokenHashIsSHA256Hex(t *testing.T) {
	if got, want := TokenHash("abc"), fmt.Sprintf("%x", sha256.Sum256([]byte("abc"))); got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}
