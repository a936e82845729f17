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

// TestDayWindowMidnightSkipped: in Santiago the clocks went from 00:00 to
// 01:00 on 2024-09-08, so that day had no midnight and started at 01:00.
func TestDayWindowMidnightSkipped(t *testing.T) {
	for _, c := range []struct {
		zone string
		day  time.Time // local noon of the day whose midnight was skipped
	}{
		{"America/Santiago", time.Date(2024, 9, 8, 12, 0, 0, 0, time.UTC)},
		{"America/Havana", time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)},
		{"America/Asuncion", time.Date(2024, 10, 6, 12, 0, 0, 0, time.UTC)},
	} {
		loc, err := time.LoadLocation(c.zone)
		if err != nil {
			t.Fatal(err)
		}
		w := DayIn(loc)
		y, m, d := c.day.Date()
		noon := time.Date(y, m, d, 12, 0, 0, 0, loc)
		start, end := w.Bounds(noon)
		if got := start.In(loc); got.Hour() != 1 || got.Day() != d {
			t.Errorf("%s: the day without midnight starts at %v, want 01:00 local", c.zone, got)
		}
		if end.Sub(start) != 23*time.Hour {
			t.Errorf("%s: the day without midnight is %v long, want 23h", c.zone, end.Sub(start))
		}
		// The last half hour of the day before: its window ends in the future,
		// exactly when the next day starts.
		before := start.Add(-30 * time.Minute)
		pStart, pEnd := w.Bounds(before)
		if !pEnd.Equal(start) || !pEnd.After(before) || pEnd.Sub(pStart) != 24*time.Hour {
			t.Errorf("%s: at %v the window is %v .. %v", c.zone, before.In(loc), pStart.In(loc), pEnd.In(loc))
		}
	}
}
