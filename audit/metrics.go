package audit

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// writeErrors counts failed appends of every Writer in this process.
var writeErrors atomic.Uint64

// WriteErrors is how many appends by a Writer (queued or LogNow) have
// failed in this process.
func WriteErrors() uint64 { return writeErrors.Load() }

var writeErrorsMetric = prometheus.NewCounterFunc(prometheus.CounterOpts{
	Namespace: "caddy", Subsystem: "apikey", Name: "audit_write_errors_total",
	Help: "Failed appends to audit logs (each is retried); see the log for the error.",
}, func() float64 { return float64(writeErrors.Load()) })

// Collector is caddy_apikey_audit_write_errors_total, for a config's
// metrics registry. It reads a process-wide count, so it survives reloads.
func Collector() prometheus.Collector { return writeErrorsMetric }
