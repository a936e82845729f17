package keystore

import (
	"encoding/json"
	"hash/crc32"
	"os"
	"strings"
	"testing"
)

type vectorFile struct {
	Vectors []struct {
		Key   string `json:"key"`
		Valid bool   `json:"valid"`
		Type  string `json:"type"`
		Hash  string `json:"hash"`
		Why   string `json:"why"`
	} `json:"vectors"`
}

// TestKeyFormatVectors checks Check and Sum against the team's shared vectors.
func TestKeyFormatVectors(t *testing.T) {
	data, err := os.ReadFile("../testdata/keyformat.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(data, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for i, v := range vf.Vectors {
		typ, ok := Check(v.Key)
		if ok != v.Valid {
			// The vector number, never the key: test output can end up in logs.
			t.Errorf("vector %d (%s): valid = %v, want %v", i, v.Why, ok, v.Valid)
			continue
		}
		if !v.Valid {
			continue
		}
		if typ.String() != v.Type {
			t.Errorf("vector %d: type %q, want %q", i, typ, v.Type)
		}
		if got := Sum(v.Key).Encode(); got != v.Hash {
			t.Errorf("vector %d: hash does not match the vector's", i)
		}
	}
}

func TestGenerateMakesValidDistinctKeys(t *testing.T) {
	seen := map[string]bool{}
	for _, typ := range []Type{Dev, Prod} {
		for i := 0; i < 200; i++ {
			k, err := Generate(typ)
			if err != nil {
				t.Fatal(err)
			}
			if len(k) != len(typ.Prefix())+RandomLen+ChecksumLen {
				t.Fatalf("generated key has length %d", len(k))
			}
			got, ok := Check(k)
			if !ok || got != typ {
				t.Fatalf("generated %s key %d does not check (ok=%v type=%v)", typ, i, ok, got)
			}
			if seen[k] {
				t.Fatal("Generate repeated a key")
			}
			seen[k] = true
		}
	}
	if _, err := Generate(0); err == nil {
		t.Error("Generate(0) succeeded")
	}
}

// TestEverySingleCharacterChangeIsCaught flips each character of a key to
// every other base62 digit: the checksum must catch all of them.
func TestEverySingleCharacterChangeIsCaught(t *testing.T) {
	k, err := Generate(Prod)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(prodPrefix); i < len(k); i++ {
		for j := 0; j < len(base62); j++ {
			if base62[j] == k[i] {
				continue
			}
			changed := k[:i] + string(base62[j]) + k[i+1:]
			if _, ok := Check(changed); ok {
				t.Fatalf("changing position %d went unnoticed", i)
			}
		}
	}
}

func TestChecksumIsCRC32IEEE(t *testing.T) {
	for _, s := range []string{"", "DEV_API_", "PROD_API_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", strings.Repeat("x", 100)} {
		if got, want := checksum(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("checksum(%q) = %d, want %d", s, got, want)
		}
	}
	// Base62 with the 0-9A-Za-z alphabet, most significant first, padded.
	if got := string(appendChecksum(nil, 0)); got != "000000" {
		t.Errorf("checksum 0 encodes as %q", got)
	}
	if got := string(appendChecksum(nil, 61)); got != "00000z" {
		t.Errorf("checksum 61 encodes as %q", got)
	}
	if got := string(appendChecksum(nil, 62)); got != "000010" {
		t.Errorf("checksum 62 encodes as %q", got)
	}
	if got := string(appendChecksum(nil, ^uint32(0))); got != "4gfFC3" {
		t.Errorf("max checksum encodes as %q", got)
	}
}

func TestCheckRejectsMalformed(t *testing.T) {
	k, _ := Generate(Dev)
	for name, bad := range map[string]string{
		"empty":          "",
		"prefix only":    "DEV_API_",
		"lowercase":      strings.ToLower(k),
		"trailing space": k + " ",
		"non-ascii":      k[:10] + "é" + k[12:],
		"other type":     "PROD_API_" + k[len(devPrefix):],
	} {
		if _, ok := Check(bad); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzCheck(f *testing.F) {
	k, _ := Generate(Dev)
	f.Add(k)
	f.Add("PROD_API_")
	f.Fuzz(func(t *testing.T, s string) {
		typ, ok := Check(s)
		if !ok {
			return
		}
		// Anything accepted must be exactly what Generate produces.
		if len(s) != len(typ.Prefix())+RandomLen+ChecksumLen {
			t.Fatal("accepted a key of the wrong length")
		}
		want := string(appendChecksum(nil, checksum(s[:len(s)-ChecksumLen])))
		if s[len(s)-ChecksumLen:] != want {
			t.Fatal("accepted a key with a wrong checksum")
		}
	})
}

func TestParseType(t *testing.T) {
	for _, s := range []string{"dev", "prod"} {
		typ, err := ParseType(s)
		if err != nil || typ.String() != s {
			t.Errorf("ParseType(%q) = %v, %v", s, typ, err)
		}
	}
	if _, err := ParseType("Dev"); err == nil {
		t.Error("ParseType accepted Dev")
	}
}

// TestMaskedHint: a record's hint shown with its type's prefix, and
// nothing for a record without a hint (never more of the secret).
func TestMaskedHint(t *testing.T) {
	for _, c := range []struct {
		rec  Record
		want string
	}{
		{Record{Type: "prod", Hint: "abcd"}, "PROD_API_…abcd"},
		{Record{Type: "dev", Hint: "abcd"}, "DEV_API_…abcd"},
		{Record{Hint: "abcd"}, "DEV_API_…abcd"},
		{Record{Type: "prod"}, ""},
	} {
		if got := MaskedHint(c.rec); got != c.want {
			t.Errorf("MaskedHint(type %q, hint %q) = %q, want %q", c.rec.Type, c.rec.Hint, got, c.want)
		}
	}
}
