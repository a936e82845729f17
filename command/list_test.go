package command

import "testing"

// TestPrintable: control and invisible formatting characters of a
// record's text are shown as escapes in the table.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"plain name": "plain name", "a\x1b[31mred": `a\x1b[31mred`, "a\nb": `a\nb`, "a\u202eb": `a\u202eb`, "ünï": "ünï"} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
