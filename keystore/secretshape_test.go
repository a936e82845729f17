package keystore

import (
	"strings"
	"testing"
)

// TestLooksLikeSecret: a key's prefix in any case anywhere, "sha256:" in any
// case, or 64 hex digits in a row; nothing else.
func TestLooksLikeSecret(t *testing.T) {
	key, _ := Generate(Prod)
	hash := Sum(key).Encode()
	for _, s := range []string{key, "Bearer " + key, strings.ToLower(key), " dev_api_x", "x-PROD_API_", hash,
		"SHA256:abc", strings.TrimPrefix(hash, "sha256:"), "id=" + strings.ToUpper(strings.TrimPrefix(hash, "sha256:"))} {
		if !LooksLikeSecret(s) {
			t.Errorf("%.20q… does not look like a secret", s)
		}
	}
	for _, s := range []string{"", "k_abc", "team api", "my_api_key", "DEV-API-x", "DEV\x7fAPI\x7fx", strings.Repeat("a", 63) + "g", "sha256", "k_" + strings.Repeat("0", 63)} {
		if LooksLikeSecret(s) {
			t.Errorf("%q looks like a secret", s)
		}
	}
}

// TestMaskSecrets: key-shaped runs become "[key]", in any case, the rest
// stays; text without one is returned as it is.
func TestMaskSecrets(t *testing.T) {
	key, _ := Generate(Dev)
	for in, want := range map[string]string{
		"/v1/" + key + "/x":                    "/v1/[key]/x",
		"/a/" + strings.ToLower(key):           "/a/[key]",
		"/q?k=" + key + key:                    "/q?k=[key][key]",
		"/DEV_API_short/x":                     "/[key]/x",
		"/my_api_path":                         "/my_api_path",
		"/plain":                               "/plain",
		"/prod_api_" + strings.Repeat("z", 50): "/[key]" + strings.Repeat("z", 14),
	} {
		if got := MaskSecrets(in); got != want {
			t.Errorf("MaskSecrets(%.30q…) = %q, want %q", in, got, want)
		}
	}
}
