package apikey

import (
	"strings"

	"github.com/moodmnky/caddy-apikey/internal/unescape"
)

// The readers of "_method" in bodies and queries, and the signs that one may
// be there: a sign is cheap to look for, and its absence proves there is
// none, so a body without one is never parsed.

// formOverrides returns the values of every field of s, a query or a
// urlencoded form, whose name a framework reads as "_method" (see
// isMethodName): pairs split on "&" and ";", names and values unescaped
// leniently.
func formOverrides(s string) []string {
	var out []string
	for len(s) > 0 {
		var pair string
		if i := strings.IndexAny(s, "&;"); i >= 0 {
			pair, s = s[:i], s[i+1:]
		} else {
			pair, s = s, ""
		}
		k, v, _ := strings.Cut(pair, "=")
		if isMethodName(unescape.Lenient(k)) {
			out = append(out, unescape.Lenient(v))
		}
	}
	return out
}

// isMethodName reports whether a field name (unescaped) is "_method" as PHP,
// qs (Express) or ASP.NET read it: cut at a NUL (PHP's names are C strings)
// and before an array suffix ("_method[]" in PHP, "_method[0]" in qs),
// leading spaces dropped and "." or " " read as "_" (PHP), in any case
// (ASP.NET).
func isMethodName(name string) bool {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	name = strings.TrimLeft(name, " ")
	if i := strings.IndexByte(name, '['); i > 0 {
		name = name[:i]
	}
	const want = "_method"
	if len(name) != len(want) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '.' || c == ' ' {
			c = '_'
		}
		if lowerASCII(c) != want[i] {
			return false
		}
	}
	return true
}

// formMayOverride reports a sign of a "_method" field in a urlencoded form
// (or a query): "_method" or ".method" in any case, or a percent-escape of
// one of their characters, which encoders never write.
func formMayOverride[T ~string | ~[]byte](b T) bool {
	return indexFold(b, "_method") >= 0 || indexFold(b, ".method") >= 0 || hasEscapeOf(b, "%")
}

// multipartMayOverride reports a sign of a part named "_method": "_method",
// ".method" (PHP), or "5fmethod" or "2emethod" (an encoded name), in any
// case.
func multipartMayOverride(b []byte) bool {
	for _, s := range [...]string{"_method", ".method", "5fmethod", "2emethod"} {
		if indexFold(b, s) >= 0 {
			return true
		}
	}
	return false
}

// jsonMayOverride reports a sign of a "_method" key in JSON: "_method" in
// any case, or a \u escape of one of its characters, which encoders never
// write.
func jsonMayOverride(b []byte) bool {
	return indexFold(b, "_method") >= 0 || hasEscapeOf(b, `\u00`)
}

// overrideNeedle reports a sign of an override in b, a part of a body read
// the ways kinds says.
func overrideNeedle(kinds bodyKind, b []byte) bool {
	return kinds&kindForm != 0 && formMayOverride(b) ||
		kinds&kindMultipart != 0 && multipartMayOverride(b) ||
		kinds&kindJSON != 0 && jsonMayOverride(b)
}

// hasEscapeOf reports whether b holds prefix followed by two hex digits
// that encode one of the characters of "_method" or ".", in any case.
func hasEscapeOf[T ~string | ~[]byte](b T, prefix string) bool {
	for i := 0; i+len(prefix)+2 <= len(b); i++ {
		if b[i] != prefix[0] || !matchFold(b[i:i+len(prefix)], prefix) {
			continue
		}
		h, l := b[i+len(prefix)], b[i+len(prefix)+1]
		if !unescape.IsHex(h) || !unescape.IsHex(l) {
			continue
		}
		c := unescape.Unhex(h)<<4 | unescape.Unhex(l)
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch c {
		case '_', '.', 'm', 'e', 't', 'h', 'o', 'd':
			return true
		}
	}
	return false
}

// jsonOverrides returns the values of every "_method" member of the
// top-level object in b, keys matched after their escapes are decoded, in
// any case. unknown reports one whose value is not a string, or is cut at
// the end of b.
func jsonOverrides(b []byte) (methods []string, unknown bool) {
	i := skipJSONSpace(b, 0)
	if len(b)-i >= 3 && b[i] == 0xEF && b[i+1] == 0xBB && b[i+2] == 0xBF {
		i = skipJSONSpace(b, i+3)
	}
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipJSONSpace(b, i)
		if i >= len(b) || b[i] == '}' {
			return methods, unknown
		}
		if b[i] == ',' {
			i++
			continue
		}
		if b[i] != '"' {
			return methods, unknown // not JSON: no parser reads on
		}
		end := jsonStringEnd(b, i)
		if end < 0 {
			return methods, unknown // cut: the rest is guarded
		}
		isMethod := jsonKeyIsMethod(b[i+1 : end])
		i = skipJSONSpace(b, end+1)
		if i >= len(b) || b[i] != ':' {
			return methods, unknown || isMethod
		}
		i = skipJSONSpace(b, i+1)
		if isMethod {
			if i < len(b) && b[i] == '"' {
				if e := jsonStringEnd(b, i); e >= 0 {
					methods = append(methods, jsonUnescape(b[i+1:e]))
				} else {
					unknown = true
				}
			} else {
				unknown = true // an array (method-override takes its first item), or cut
			}
		}
		if i = skipJSONValue(b, i); i < 0 {
			return methods, unknown
		}
	}
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonStringEnd returns the index of the quote that closes the string
// opened at b[i], or -1.
func jsonStringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

// skipJSONValue returns the index after the value at b[i], or -1 when it is
// cut or malformed.
func skipJSONValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		if e := jsonStringEnd(b, i); e >= 0 {
			return e + 1
		}
		return -1
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				e := jsonStringEnd(b, i)
				if e < 0 {
					return -1
				}
				i = e
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return -1
}

// jsonKeyIsMethod reports whether s, a JSON string's content, decodes to
// "_method" in any case, without allocating.
func jsonKeyIsMethod(s []byte) bool {
	const want = "_method"
	n := 0
	for i := 0; i < len(s); n++ {
		c := s[i]
		i++
		if c == '\\' {
			if i >= len(s) {
				return false
			}
			e := s[i]
			i++
			switch e {
			case 'u':
				if i+4 > len(s) || !unescape.IsHex(s[i]) || !unescape.IsHex(s[i+1]) || !unescape.IsHex(s[i+2]) || !unescape.IsHex(s[i+3]) {
					return false
				}
				if unescape.Unhex(s[i])|unescape.Unhex(s[i+1]) != 0 {
					return false // not ASCII
				}
				c = unescape.Unhex(s[i+2])<<4 | unescape.Unhex(s[i+3])
				i += 4
			default:
				c = e // \" \\ \/ and the control escapes: none is in "_method"
			}
		}
		if n >= len(want) || lowerASCII(c) != want[n] {
			return false
		}
	}
	return n == len(want)
}

// jsonUnescape decodes a JSON string's content, leniently.
func jsonUnescape(s []byte) string {
	if !strings.Contains(string(s), `\`) {
		return string(s)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'u':
			if i+4 < len(s) && unescape.IsHex(s[i+1]) && unescape.IsHex(s[i+2]) && unescape.IsHex(s[i+3]) && unescape.IsHex(s[i+4]) {
				r := rune(unescape.Unhex(s[i+1]))<<12 | rune(unescape.Unhex(s[i+2]))<<8 | rune(unescape.Unhex(s[i+3]))<<4 | rune(unescape.Unhex(s[i+4]))
				b.WriteRune(r)
				i += 4
			}
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// indexFold is strings.Index for an ASCII, lower-case sub, in any case,
// without allocating.
func indexFold[T ~string | ~[]byte](s T, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i]|0x20 == sub[0]|0x20 && matchFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// matchFold reports whether s equals sub, an ASCII lower-case string of the
// same length, in any case.
func matchFold[T ~string | ~[]byte](s T, sub string) bool {
	for j := 0; j < len(sub); j++ {
		c := s[j]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != sub[j] {
			return false
		}
	}
	return true
}
