package ratelimit

import "time"

// Window is the calendar day in a time zone: it starts at local midnight and
// lasts until the next one, so it is 23 or 25 hours long on days when the
// clocks change. Where a change skips midnight itself (as in Santiago or
// Havana), the day starts at the first instant that exists, 01:00.
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
	loc := w.Location()
	y, m, d := now.In(loc).Date()
	return dayStart(y, m, d, loc), dayStart(y, m, d+1, loc)
}

// dayStart returns the first instant of a local calendar day.
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // the date, normalized
	if sameDate(t.In(loc), want) {
		return t
	}
	// Midnight does not exist that day: time.Date gave an instant of the
	// day before. The day starts at the clock change, within a few hours:
	// find the first second whose local date is the day.
	lo, hi := t.Unix(), t.Unix()+6*3600
	for lo < hi {
		mid := lo + (hi-lo)/2
		if dateBefore(time.Unix(mid, 0).In(loc), want) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return time.Unix(lo, 0).In(loc)
}

func sameDate(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd
}

func dateBefore(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	if ay != by {
		return ay < by
	}
	if am != bm {
		return am < bm
	}
	return ad < bd
}

// appendCandidates appends the bounds (Unix seconds, start then end) of the
// windows of yesterday, today and tomorrow by the instance clock local: the
// Redis scripts take the one that holds Redis's own time, so instance
// clocks that differ by less than a day cannot move a reset.
func (w Window) appendCandidates(args []any, local time.Time) []any {
	for _, day := range [3]time.Time{local.AddDate(0, 0, -1), local, local.AddDate(0, 0, 1)} {
		start, end := w.Bounds(day)
		args = append(args, start.Unix(), end.Unix())
	}
	return args
}
