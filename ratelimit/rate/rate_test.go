package rate

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for s, want := range map[string]Rate{
		"10/s":   {10, time.Second},
		"600/m":  {600, time.Minute},
		"1000/h": {1000, time.Hour},
	} {
		got, err := Parse(s)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v", s, got, err)
		}
		if got.String() != s {
			t.Errorf("%q prints as %q", s, got.String())
		}
	}
	for _, bad := range []string{"", "10", "10/d", "0/s", "-1/s", "x/s", "10/S", "1.5/s"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestParseDaily(t *testing.T) {
	if n, err := ParseDaily("10000/day"); err != nil || n != 10000 {
		t.Errorf("%d %v", n, err)
	}
	for _, bad := range []string{"10000", "10000/d", "10000/h", "-1/day", "x/day"} {
		if _, err := ParseDaily(bad); err == nil {
			t.Errorf("ParseDaily(%q) accepted", bad)
		}
	}
}
