package scanning_test

import (
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// demoKey is one of the project's public demo keys (README.md), which
// the rules allow.
const demoKey = "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl"

// samples are the strings the rules are tested on: a key made for the
// test, a lookalike of another (its checksum changed), and strings a rule
// must not report.
type samples struct {
	planted   string // a key: reported
	lookalike string // a wrong checksum: reported (a rule cannot check it)
	inWord    string // a key inside a longer token: not reported
	filler    string // a placeholder of a key's shape: not reported (entropy)
}

func newSamples(t *testing.T) samples {
	t.Helper()
	planted, err := keystore.Generate(keystore.Prod)
	if err != nil {
		t.Fatal(err)
	}
	other, err := keystore.Generate(keystore.Dev)
	if err != nil {
		t.Fatal(err)
	}
	third, err := keystore.Generate(keystore.Dev)
	if err != nil {
		t.Fatal(err)
	}
	s := samples{planted: planted, inWord: "MY_" + third, filler: "DEV_API_" + strings.Repeat("x", 36)}
	for _, c := range "0123456789" {
		if l := other[:len(other)-1] + string(c); !valid(l) {
			s.lookalike = l
			break
		}
	}
	return s
}

func valid(s string) bool { _, ok := keystore.Check(s); return ok }

// name says which sample s is, for failure messages: never the string.
func (s samples) name(secret string) string {
	switch secret {
	case s.planted:
		return "the planted key"
	case s.lookalike:
		return "the lookalike"
	case demoKey:
		return "the demo key"
	case s.filler:
		return "the placeholder"
	}
	if strings.Contains(s.inWord, secret) {
		return "the key inside a word"
	}
	return "a string of " + itoa(len(secret)) + " characters"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
