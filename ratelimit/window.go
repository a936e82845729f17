package ratelimit

import "time"

// Window is the calendar day in a time zone: it starts at local midnight and
// lasts until the next one, so it is 23 or 25 hours long on days when the
// clocks change.
type Window struct {
	loc *time.Location
}

// DayIn returns the calendar-day window of loc; nil means UTC.
func DayIn(loc *time.Location) Window {
	if loc == nil {
		loc = time.UTC
	}
	return Window{loc: loc}
}

// Location returns the window's time zone.
func (w Window) Location() *time.Location {
	if w.loc == nil {
		return time.UTC
	}
	return w.loc
}

// Bounds returns the start and end of the window that holds now.
func (w Window) Bounds(now time.Time) (start, end time.Time) {
	local := now.In(w.Location())
	y, m, d := local.Date()
	start = time.Date(y, m, d, 0, 0, 0, 0, w.Location())
	end = time.Date(y, m, d+1, 0, 0, 0, 0, w.Location())
	return start, end
}
