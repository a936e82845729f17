package admin

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/usage"
)

// usageReport answers GET /apikey/usage: the usage counts of the running
// config's usage files, a page of rows by hour or by day.
func usageReport(w http.ResponseWriter, r *http.Request, running *app.App) error {
	q := r.URL.Query()
	query := usage.Query{KeyID: q.Get("key"), Service: q.Get("service"), To: time.Now()}
	var err error
	inRange := func(name string, t time.Time) error {
		if t.Year() < 2000 || t.Year() > 9999 {
			return apiError(http.StatusBadRequest, "%s: %s is out of range", name, t.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if s := q.Get("to"); s != "" {
		if query.To, err = parseTimeParam(s); err != nil {
			return apiError(http.StatusBadRequest, "to: %v", err)
		}
		if err := inRange("to", query.To); err != nil {
			return err
		}
		if len(s) == len(dateParam) {
			// A date as "to" takes in that day: from=2026-12-02&to=2026-12-02
			// is December 2nd.
			query.To = query.To.Add(24 * time.Hour)
		}
	}
	query.From = query.To.Add(-24 * time.Hour)
	if s := q.Get("from"); s != "" {
		if query.From, err = parseTimeParam(s); err != nil {
			return apiError(http.StatusBadRequest, "from: %v", err)
		}
	}
	if err := inRange("from", query.From); err != nil {
		return err
	}
	if !query.From.Before(query.To) {
		return apiError(http.StatusBadRequest, "from must be before to")
	}
	// Only the hours a usage store still keeps are read: a range wider
	// than the retention would cost a Redis read an hour for nothing.
	query, clamped := query.Clamp(time.Now(), running.UsageRetention())
	switch by := q.Get("by"); by {
	case "", "hour":
	case "day":
		// Whole UTC days, so no day's row counts only part of it.
		query.ByDay = true
		query.From = query.From.UTC().Truncate(24 * time.Hour)
		if end := query.To.UTC().Truncate(24 * time.Hour); !end.Equal(query.To) {
			query.To = end.Add(24 * time.Hour)
		}
	default:
		return apiError(http.StatusBadRequest, "by: %q is not hour or day", by)
	}
	limit := defaultUsagePage
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxUsagePage {
			return apiError(http.StatusBadRequest, "limit: %q is not a whole number from 1 to %d", s, maxUsagePage)
		}
	}
	var after *usage.Row
	if s := q.Get("cursor"); s != "" {
		if after, err = usage.ParseCursor(s); err != nil {
			return apiError(http.StatusBadRequest, "cursor: not one this endpoint gave")
		}
	}
	for name := range q {
		switch name {
		case "key", "service", "from", "to", "by", "limit", "cursor":
		default:
			return apiError(http.StatusBadRequest, "unknown parameter %q (want key, service, from, to, by, limit, cursor)", name)
		}
	}
	rows, err := running.UsageRows(r.Context(), query)
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "%v", err)
	}
	page, next := usage.Page(rows, after, limit)
	by := "hour"
	if query.ByDay {
		by = "day"
	}
	answer := map[string]any{"from": query.From.UTC(), "to": query.To.UTC(), "by": by, "rows": page}
	if clamped {
		answer["clamped"] = true
	}
	if next != "" {
		answer["next_cursor"] = next
	}
	return writeJSON(w, answer)
}

// Usage pages: rows per answer by default, and at most.
const (
	defaultUsagePage = 1000
	maxUsagePage     = 10000
)

// dateParam is the layout of a date in a query.
const dateParam = "2006-01-02"

// parseTimeParam reads RFC 3339 or a date (YYYY-MM-DD, UTC midnight).
func parseTimeParam(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(dateParam, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a date such as 2026-11-27", s)
}
