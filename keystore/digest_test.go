package keystore

import (
	"fmt"
	"strings"
	"testing"
)

func TestDigestRoundTrip(t *testing.T) {
	k, _ := Generate(Dev)
	d := Sum(k)
	back, err := ParseDigest(d.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if back != d || !back.Equal(d) {
		t.Fatal("digest changed in a round trip")
	}
	if Sum(k + "x").Equal(d) {
		t.Fatal("different keys have equal digests")
	}
}

func TestDigestNeverPrints(t *testing.T) {
	d := Sum("DEV_API_whatever")
	hexPart := strings.TrimPrefix(d.Encode(), "sha256:")
	for _, verb := range []string{"%v", "%s", "%x", "%+v"} {
		if out := fmt.Sprintf(verb, d); strings.Contains(out, hexPart) || strings.Contains(out, hexPart[:16]) {
			t.Errorf("%s prints the digest", verb)
		}
	}
}

func TestParseDigestRejects(t *testing.T) {
	good := Sum("x").Encode()
	for name, s := range map[string]string{
		"empty":       "",
		"no prefix":   strings.TrimPrefix(good, "sha256:"),
		"uppercase":   "sha256:" + strings.ToUpper(strings.TrimPrefix(good, "sha256:")),
		"short":       good[:len(good)-1],
		"long":        good + "0",
		"not hex":     good[:len(good)-1] + "g",
		"other algo":  "sha512:" + strings.TrimPrefix(good, "sha256:"),
		"upper label": "SHA256:" + strings.TrimPrefix(good, "sha256:"),
	} {
		_, err := ParseDigest(s)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("%s: the error repeats the input", name)
		}
	}
}
