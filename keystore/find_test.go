package keystore

import (
	"strings"
	"testing"
)

func findAll(text string) (offsets []int, keys []string) {
	Find([]byte(text), func(off int, key string) bool {
		offsets = append(offsets, off)
		keys = append(keys, key)
		return true
	})
	return
}

func TestFindReportsStandaloneKeys(t *testing.T) {
	dev, _ := Generate(Dev)
	prod, _ := Generate(Prod)
	text := "OPENAI_API_KEY=" + dev + "\n" +
		`{"key": "` + prod + `"}` + "\n" +
		"Authorization: Bearer " + dev + "."
	offsets, keys := findAll(text)
	if len(keys) != 3 || keys[0] != dev || keys[1] != prod || keys[2] != dev {
		t.Fatalf("found %d keys, want dev, prod, dev", len(keys))
	}
	for i, off := range offsets {
		if !strings.HasPrefix(text[off:], keys[i]) {
			t.Errorf("key %d: offset %d does not point at it", i, off)
		}
	}
}

func TestFindIgnoresLookalikes(t *testing.T) {
	dev, _ := Generate(Dev)
	last := dev[len(dev)-1]
	changed := dev[:len(dev)-1] + string("0123456789"[(int(last)+1)%10])
	if changed == dev {
		t.Fatal("the test did not change the key")
	}
	for name, text := range map[string]string{
		"checksum off":        changed,
		"inside a word":       "X" + dev,
		"after an underscore": "MY_" + dev,
		"longer run":          dev + "a",
		"cut":                 dev[:len(dev)-1],
		"lowercase prefix":    "dev_api_" + dev[len("DEV_API_"):],
		"no prefix":           "_API_" + dev[len("DEV_API_"):],
	} {
		if _, keys := findAll(text); len(keys) != 0 {
			t.Errorf("%s: reported %d keys", name, len(keys))
		}
	}
}

func TestFindStopsWhenAsked(t *testing.T) {
	dev, _ := Generate(Dev)
	n := 0
	Find([]byte(dev+" "+dev+" "+dev), func(int, string) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("yield called %d times after returning false, want 2", n)
	}
}

func FuzzFind(f *testing.F) {
	dev, _ := Generate(Dev)
	f.Add([]byte("x=" + dev))
	f.Add([]byte("PROD_API_DEV_API_" + dev))
	f.Fuzz(func(t *testing.T, text []byte) {
		Find(text, func(off int, key string) bool {
			if _, ok := Check(key); !ok || string(text[off:off+len(key)]) != key {
				t.Fatalf("reported a string that is not a key at %d", off)
			}
			return true
		})
	})
}
