package usage

import (
	"testing"
	"time"
)

// TestQueryClamp: a range is narrowed to the hours a store with the
// retention may hold, from the hour before the oldest kept to the end of
// the current hour; a range inside is left alone; one wholly outside ends
// up empty.
func TestQueryClamp(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	oldest := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC) // the hour before 30 Nov 10:00, the hour 48 h before now
	end := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name             string
		from, to         time.Time
		wantFrom, wantTo time.Time
		clamped          bool
	}{
		{"everything", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), oldest, end, true},
		{"inside", now.Add(-24 * time.Hour), now, now.Add(-24 * time.Hour), now, false},
		{"before", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), oldest, oldest, true},
		{"after", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		q, clamped := Query{From: c.from, To: c.to}.Clamp(now, 48*time.Hour)
		if !q.From.Equal(c.wantFrom) || !q.To.Equal(c.wantTo) || clamped != c.clamped {
			t.Errorf("%s: %s to %s, clamped %v; want %s to %s, %v", c.name, q.From, q.To, clamped, c.wantFrom, c.wantTo, c.clamped)
		}
	}
}
