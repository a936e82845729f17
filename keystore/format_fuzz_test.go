package keystore

import (
	"hash/crc32"
	"strings"
	"testing"
)

// fuzzAlphabet is the key alphabet, written out again so that the oracle
// below does not share the code under test.
const fuzzAlphabet = "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"

// wellFormed is the key format as README.md states it, written independently
// of Check: a known prefix, 30 characters of the alphabet, and the CRC-32
// (IEEE) of prefix and random part in base62, most significant digit first,
// left-padded with '0' to 6 characters.
func wellFormed(key string) (Type, bool) {
	var t Type
	var rest string
	switch {
	case strings.HasPrefix(key, "DEV_API_"):
		t, rest = Dev, key[len("DEV_API_"):]
	case strings.HasPrefix(key, "PROD_API_"):
		t, rest = Prod, key[len("PROD_API_"):]
	default:
		return 0, false
	}
	if len(rest) != 36 {
		return 0, false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(fuzzAlphabet, rest[i]) < 0 {
			return 0, false
		}
	}
	body := key[:len(key)-6]
	if key != body+fuzzChecksum(body) {
		return 0, false
	}
	return t, true
}

func fuzzChecksum(body string) string {
	n := crc32.ChecksumIEEE([]byte(body))
	digits := []byte("000000")
	for i := 5; i >= 0; i-- {
		digits[i] = fuzzAlphabet[n%62]
		n /= 62
	}
	return string(digits)
}

// fuzzKey makes a well-formed key whose random part comes from seed.
func fuzzKey(prod bool, seed []byte) string {
	prefix := "DEV_API_"
	if prod {
		prefix = "PROD_API_"
	}
	random := make([]byte, 30)
	for i := range random {
		var b byte
		if len(seed) > 0 {
			b = seed[i%len(seed)] + byte(i/len(seed))
		}
		random[i] = fuzzAlphabet[int(b)%62]
	}
	body := prefix + string(random)
	return body + fuzzChecksum(body)
}

// FuzzKeyFormat: Check accepts exactly the keys the format allows (Generate's
// output among them), reports their type, agrees with Diagnose, and refuses
// every key with one character changed, one cut off or one added. Failure
// messages never repeat the key: the failing input is in testdata/fuzz.
func FuzzKeyFormat(f *testing.F) {
	for _, s := range []string{
		"", "DEV_API_", "PROD_API_", "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl",
		"PROD_API_7f0yp1eZjfGIJoJhjQ9vFQGlLHpImm2RMKx5", "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsx",
		"dev_api_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl", "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZs",
		"DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZsl ", "DEV_API_65sRIoVBVXlGsimi3Iw6fKseVy7x9r3JRZ\u00e9",
		"DEV_API_000000000000000000000000000000000000", "PROD_API_" + strings.Repeat("z", 36),
	} {
		f.Add(s, uint16(0), byte(0))
	}
	f.Add("", uint16(7), byte('A'))
	f.Add("x", uint16(40), byte('z'))

	f.Fuzz(func(t *testing.T, s string, pos uint16, c byte) {
		// Any string: Check says yes exactly when the format does.
		typ, ok := Check(s)
		wantType, want := wellFormed(s)
		if ok != want || typ != wantType {
			t.Fatalf("Check = %v, %v; the format says %v, %v", typ, ok, wantType, want)
		}
		if dt, err := Diagnose(s); (err == nil) != ok || (ok && dt != typ) {
			t.Fatalf("Diagnose = %v, %v; Check says %v, %v", dt, err, typ, ok)
		}
		if ok && !HasKnownPrefix(s) {
			t.Fatal("Check accepts the input, HasKnownPrefix does not")
		}

		// A well-formed key made from the input: accepted; any one change,
		// cut or addition: refused.
		key := fuzzKey(pos%2 == 1, []byte(s))
		if typ, ok := Check(key); !ok || typ.Prefix() != key[:len(typ.Prefix())] {
			t.Fatalf("Check refuses a well-formed key (%v, %v)", typ, ok)
		}
		i := int(pos) % len(key)
		if key[i] != c {
			changed := key[:i] + string(c) + key[i+1:]
			if _, ok := Check(changed); ok {
				t.Fatalf("Check accepts a well-formed key with character %d changed to %q", i, c)
			}
		}
		for _, variant := range []string{key[:i] + key[i+1:], key[:i] + string(c) + key[i:], key[:len(key)-1], key + string(c)} {
			if _, ok := Check(variant); ok {
				t.Fatalf("Check accepts a well-formed key with a character cut or added at %d (%d characters)", i, len(variant))
			}
		}
	})
}

// TestCheckAcceptsGenerate ties the fuzz oracle to Generate: what Generate
// makes is well formed by the oracle's reading of the format.
func TestCheckAcceptsGenerate(t *testing.T) {
	for range 200 {
		for _, typ := range []Type{Dev, Prod} {
			key, err := Generate(typ)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := wellFormed(key); !ok || got != typ {
				t.Fatalf("a generated %s key is not well formed by the format (%v, %v)", typ, got, ok)
			}
			if got, ok := Check(key); !ok || got != typ {
				t.Fatalf("Check refuses a generated %s key (%v, %v)", typ, got, ok)
			}
		}
	}
}
