package keystore

import (
	"strings"
	"testing"
)

// TestCheckIDRefusesWhatDoesNotShow: an id with a character that does not
// show (or shows as a plain space) is refused when a record is compiled,
// so no two ids look alike; ids that show, in any script, pass.
func TestCheckIDRefusesWhatDoesNotShow(t *testing.T) {
	for _, id := range []string{"k_abc", "k_7fq2xk9m3a", "team alpha", "clé_été", "ключ", "鍵-1", "k/with/slash", "k_q\u0301"} {
		if err := CheckID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, c := range []struct{ id, why string }{
		{"k_zw\u200b", "U+200B"},          // zero-width space (Cf)
		{"k_\u200dzw", "U+200D"},          // zero-width joiner
		{"k_\u2060x", "U+2060"},           // word joiner
		{"k_\ufeffx", "U+FEFF"},           // byte order mark
		{"k_\u00adx", "U+00AD"},           // soft hyphen
		{"k_\u202ex", "U+202E"},           // right-to-left override
		{"k_\u2067x", "U+2067"},           // right-to-left isolate
		{"k_\u200fx", "U+200F"},           // right-to-left mark
		{"k_\u061cx", "U+061C"},           // Arabic letter mark
		{"k_\U000e0041x", "U+E0041"},      // tag letter
		{"k_a\u00a0b", "U+00A0"},          // no-break space (Zs)
		{"k_a\u3000b", "U+3000"},          // ideographic space
		{"k_a\u2028b", "U+2028"},          // line separator (Zl)
		{"k_a\u2029b", "U+2029"},          // paragraph separator (Zp)
		{"k_a\tb", "U+0009"},              // tab (Cc)
		{"k_a\x7f", "U+007F"},             // DEL
		{"k_a\u0085", "U+0085"},           // next line (C1)
		{"k_a\ufe0f", "U+FE0F"},           // variation selector
		{"k_a\u034f", "U+034F"},           // combining grapheme joiner
		{"k_\u3164", "U+3164"},            // Hangul filler
		{"k_\u2800", "U+2800"},            // braille blank
		{"k_\ue000", "U+E000"},            // private use
		{"k_\ufffd", "U+FFFD"},            // replacement character
		{"k_\xff", "UTF-8"},               // not UTF-8
		{"k_cafe\u0301", "normal form C"}, // NFD: "café" beside an NFC "café"
		{"k_a\u0301", "normal form C"},
		{" k_a", "white space"},
		{"k_a ", "white space"},
	} {
		err := CheckID(c.id)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: %v, want a refusal naming %s", c.id, err, c.why)
		}
		if _, err := Compile(Record{ID: c.id, Hash: Sum("x").Encode(), Role: "reader"}); err == nil {
			t.Errorf("%q: compiled", c.id)
		}
	}
}
