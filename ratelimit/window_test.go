package ratelimit

import (
	"testing"
	"time"
)

func TestDayWindowUTC(t *testing.T) {
	w := DayIn(nil)
	now := time.Date(2026, 11, 27, 23, 59, 59, 999999999, time.UTC)
	start, end := w.Bounds(now)
	if !start.Equal(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)) || !end.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("bounds %v .. %v", start, end)
	}
	start2, _ := w.Bounds(now.Add(time.Nanosecond))
	if !start2.Equal(end) {
		t.Errorf("a nanosecond after the end is in window %v", start2)
	}
}

// TestDayWindowDST checks the 23-hour and 25-hour days of a zone with
// daylight saving time, and the reset at local midnight.
func TestDayWindowDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	w := DayIn(berlin)
	for _, c := range []struct {
		day  time.Time
		want time.Duration
	}{
		{time.Date(2026, 3, 29, 12, 0, 0, 0, berlin), 23 * time.Hour},  // spring forward
		{time.Date(2026, 10, 25, 12, 0, 0, 0, berlin), 25 * time.Hour}, // fall back
		{time.Date(2026, 11, 27, 12, 0, 0, 0, berlin), 24 * time.Hour},
	} {
		start, end := w.Bounds(c.day)
		if got := end.Sub(start); got != c.want {
			t.Errorf("%s: window is %v, want %v", c.day.Format("2006-01-02"), got, c.want)
		}
		if h, m, _ := start.In(berlin).Clock(); h != 0 || m != 0 {
			t.Errorf("%s: starts at %v local", c.day.Format("2006-01-02"), start.In(berlin))
		}
	}
	// 23:30 UTC on Nov 27 is already Nov 28 in Berlin.
	start, _ := w.Bounds(time.Date(2026, 11, 27, 23, 30, 0, 0, time.UTC))
	if !start.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, berlin)) {
		t.Errorf("window start %v", start)
	}
}
