package usage

import "time"

// Clamp narrows q to the hours a store that keeps counts for retention may
// still hold at now: from the hour before the oldest one kept (Redis keeps
// an hour retention past its end, the usage file drops it retention past
// its start) to the end of the current hour. A report then reads at most
// retention/1h + 2 hours, whatever range it was asked for. clamped says
// whether q changed; a range wholly outside it ends up
// empty (From == To).
func (q Query) Clamp(now time.Time, retention time.Duration) (_ Query, clamped bool) {
	if retention <= 0 {
		retention = DefaultRetention
	}
	oldest := time.Unix(now.Add(-retention).Unix()/3600*3600-3600, 0).UTC()
	end := time.Unix((now.Unix()/3600+1)*3600, 0).UTC()
	if q.From.Before(oldest) {
		q.From, clamped = oldest, true
	}
	if q.To.After(end) {
		q.To, clamped = end, true
	}
	if q.To.Before(q.From) {
		q.To = q.From // wholly before the retention, or after now: nothing to read
	}
	return q, clamped
}
