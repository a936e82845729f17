// Package unescape decodes percent escapes leniently, for the checks that
// look into what a client sent (the method-override check, the admin API's
// refusal of keys).
package unescape

import "strings"

// Lenient decodes every valid %XX escape and "+" of s and keeps whatever
// is not one as it is: one bad escape must not hide the good ones (Go's
// own unescaping fails whole, while the query parser still decodes each
// pair it can). The method-override check reads forms with it, and the
// admin API looks for keys in what it is sent.
func Lenient(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '%' && i+2 < len(s) && IsHex(s[i+1]) && IsHex(s[i+2]):
			b.WriteByte(Unhex(s[i+1])<<4 | Unhex(s[i+2]))
			i += 2
		case s[i] == '+':
			b.WriteByte(' ')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// IsHex reports whether c is a hex digit.
func IsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Unhex is the value of the hex digit c.
func Unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
