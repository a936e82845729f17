package keystore

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// CheckID refuses a key id that two people could read as another: one with
// a character that does not show, or shows as a plain space. Ids are
// looked up exactly, byte for byte (the admin API, the commands and the
// portal never trim or normalise one), so "k_zw" and "k_zw" followed by a
// zero-width space would be two keys that no one can tell apart in a log
// line, a listing or a URL. Refused, anywhere in an id:
//
//   - control characters (Unicode category Cc: C0, DEL, C1);
//   - format characters (Cf): zero-width space, joiners and non-joiner,
//     soft hyphen, word joiner, the byte order mark, every bidirectional
//     control (LRM, RLM, ALM, embeddings, overrides, isolates), tags;
//   - every separator (Zs, Zl, Zp) but the plain space U+0020, which may
//     stand inside an id, never at either end: no-break, en, em, thin,
//     ideographic spaces, the line and paragraph separators;
//   - the other characters Unicode says are ignored when shown (variation
//     selectors, the combining grapheme joiner, Hangul fillers, Mongolian
//     free variation selectors) and the braille blank U+2800;
//   - surrogates, private-use and unassigned code points, U+FFFD (the
//     mark of a bad encoding), and bytes that are not UTF-8;
//   - and an id not in Unicode normal form C: "café" with a combining accent
//     after the "e" shows as "café" with a precomposed "é", and the two would
//     be different ids.
//
// Letters of different scripts that look alike (a Cyrillic "а" and a Latin
// "a") are allowed: they are different characters, ids in those scripts are
// real, and every lookup is exact.
func CheckID(id string) error {
	if id == "" {
		return fieldErr("id", "is required")
	}
	if !utf8.ValidString(id) {
		return fieldErr("id", "is not valid UTF-8")
	}
	nonASCII := false
	for i, r := range id {
		if r < utf8.RuneSelf && r > ' ' && r != 0x7f {
			continue // printable ASCII, most ids whole
		}
		if r == ' ' {
			if i == 0 || i == len(id)-1 {
				return fieldErr("id", "has white space around it")
			}
			continue
		}
		if what := invisible(r); what != "" {
			return fieldErr("id", "holds %s %U at byte %d; an id may hold only characters that show, so that no two ids look alike", what, r, i)
		}
		nonASCII = true
	}
	if nonASCII && !norm.NFC.IsNormalString(id) {
		return fieldErr("id", "is not in Unicode normal form C (a letter and a combining mark where one precomposed character exists): write it composed, as %q", norm.NFC.String(id))
	}
	return nil
}

// invisible names the kind of r when an id may not hold it, else "".
func invisible(r rune) string {
	switch {
	case unicode.Is(unicode.Cc, r):
		return "the control character"
	case unicode.Is(unicode.Cf, r):
		return "the invisible format character"
	case unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp), unicode.IsSpace(r):
		return "the white space"
	case unicode.In(r, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point), r == '\u2800':
		return "the invisible character"
	case r == utf8.RuneError:
		return "the replacement character"
	case unicode.In(r, unicode.Cs, unicode.Co), !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S):
		return "the private-use or unassigned character"
	}
	return ""
}
