// Package rate holds the limits written in configuration and key records as
// values — a burst rate such as "10/s" and a daily quota such as "10000/day" —
// with their parsers; it counts nothing (package ratelimit does).
package rate

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is Limit requests per Period. The zero Rate means no limit.
type Rate struct {
	Limit  int64
	Period time.Duration
}

// IsZero reports whether r sets no limit.
func (r Rate) IsZero() bool { return r.Limit <= 0 || r.Period <= 0 }

// String writes r as Parse reads it.
func (r Rate) String() string {
	unit := "s"
	n := r.Period / time.Second
	switch {
	case r.Period == time.Hour:
		unit, n = "h", 1
	case r.Period == time.Minute:
		unit, n = "m", 1
	}
	if n == 1 {
		return strconv.FormatInt(r.Limit, 10) + "/" + unit
	}
	return strconv.FormatInt(r.Limit, 10) + "/" + strconv.FormatInt(int64(n), 10) + unit
}

// Parse reads a rate such as "10/s", "600/m" or "1000/h".
func Parse(s string) (Rate, error) {
	n, unit, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want <n>/s, <n>/m or <n>/h", s)
	}
	limit, err := strconv.ParseInt(n, 10, 64)
	if err != nil || limit <= 0 {
		return Rate{}, fmt.Errorf("rate %q: %q is not a positive whole number", s, n)
	}
	var period time.Duration
	switch unit {
	case "s":
		period = time.Second
	case "m":
		period = time.Minute
	case "h":
		period = time.Hour
	default:
		return Rate{}, fmt.Errorf("rate %q: unit %q is not s, m or h", s, unit)
	}
	if period/time.Duration(limit) < time.Microsecond {
		return Rate{}, fmt.Errorf("rate %q: more than one request per microsecond cannot be counted; leave the burst rate out instead", s)
	}
	return Rate{Limit: limit, Period: period}, nil
}

// ParseDaily reads a daily quota such as "10000/day".
func ParseDaily(s string) (int64, error) {
	n, unit, ok := strings.Cut(s, "/")
	if !ok || unit != "day" {
		return 0, fmt.Errorf("quota %q: want <n>/day", s)
	}
	limit, err := strconv.ParseInt(n, 10, 64)
	if err != nil || limit < 0 {
		return 0, fmt.Errorf("quota %q: %q is not a whole number", s, n)
	}
	return limit, nil
}
