package apikey

import (
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// Refusals that are not about a known key (a missing or invalid key, a key
// source that cannot answer, an address throttled after failed
// authentications) come from anyone, from any number of addresses: they
// must not grow the log, the audit log and the events by a line each.
// Each interval (a minute), the first of them are written one by one: at
// most anonPerClient per client address (IPv6 /64) and kind (decision and
// reason), and anonPerInterval per kind in all. The others are only counted, and
// summarised when the interval ends: one log line ("requests denied,
// summarised") and one audit entry ("request.denied.summary") with their
// number per kind and per network (the failed-authentication throttle's
// /16 and /48), the networks past maxSummaryPrefixes counted together as
// "other". Every refusal is still counted in the metrics.

// summaryEvery is the interval; a variable for the tests.
var summaryEvery = time.Minute

const (
	anonPerClient      = 20
	anonPerInterval    = 100
	maxSummaryPrefixes = 64
	maxSummaryKinds    = 32
)

type refusalKind struct{ decision, reason string }

type anonClient struct {
	kind   refusalKind
	client netip.Prefix
}

// anonRefusals is the budget and the summary of the refusals of unknown
// clients written to one audit log (or to none): every route that writes
// there shares it, across reloads.
type anonRefusals struct {
	mu     sync.Mutex
	logger *zap.Logger
	audit  *audit.Writer

	start     time.Time           // of the interval; zero when none is open
	written   map[refusalKind]int // at most maxSummaryKinds entries
	perClient map[anonClient]int  // at most anonPerInterval entries per kind
	total     int64               // refusals summarised
	kinds     map[refusalKind]int64
	prefixes  map[netip.Prefix]int64
	other     int64 // refusals from networks past maxSummaryPrefixes
	timer     *time.Timer
}

// anonFor returns the summary of the refusals written to the audit log w
// (nil for none), with the logger and writer of the latest route.
func (l *refusalLog) anonFor(w *audit.Writer, logger *zap.Logger) *anonRefusals {
	path := ""
	if w != nil {
		path = w.Path()
	}
	l.anonMu.Lock()
	defer l.anonMu.Unlock()
	if l.anon == nil {
		l.anon = map[string]*anonRefusals{}
	}
	a := l.anon[path]
	if a == nil {
		a = &anonRefusals{written: map[refusalKind]int{}, perClient: map[anonClient]int{}, kinds: map[refusalKind]int64{}, prefixes: map[netip.Prefix]int64{}}
		l.anon[path] = a
	}
	a.mu.Lock()
	a.logger, a.audit = logger, w
	a.mu.Unlock()
	return a
}

// admit reports whether this refusal is written; when it is not, it is
// counted for the interval's summary. prefix is the client's network.
func (a *anonRefusals) admit(decision, reason string, addr netip.Addr, prefix netip.Prefix, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.start.IsZero() && now.Sub(a.start) >= summaryEvery {
		a.flushLocked(now)
	}
	if a.start.IsZero() {
		a.start = now
	}
	kind := refusalKind{decision, reason}
	ck := anonClient{kind, ratelimit.ClientPrefix(addr)}
	if n, ok := a.written[kind]; n < anonPerInterval && a.perClient[ck] < anonPerClient && (ok || len(a.written) < maxSummaryKinds) {
		a.written[kind]++
		a.perClient[ck]++
		return true
	}
	a.total++
	if _, ok := a.kinds[kind]; ok || len(a.kinds) < maxSummaryKinds {
		a.kinds[kind]++
	} else {
		a.kinds[refusalKind{"other", ""}]++
	}
	if _, ok := a.prefixes[prefix]; ok || len(a.prefixes) < maxSummaryPrefixes {
		a.prefixes[prefix]++
	} else {
		a.other++
	}
	if a.timer == nil {
		a.timer = time.AfterFunc(a.start.Add(summaryEvery).Sub(now), a.flushDue)
	}
	return false
}

// flush writes the summary of the interval, if any refusal was summarised,
// and ends it. Called when the interval ends and when a route that shares
// it is unloaded.
func (a *anonRefusals) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked(time.Now())
}

// flushDue is flush for the timer: a no-op when admit already ended the
// interval the timer was set for.
func (a *anonRefusals) flushDue() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := time.Now(); !a.start.IsZero() && now.Sub(a.start) >= summaryEvery {
		a.flushLocked(now)
	}
}

func (a *anonRefusals) flushLocked(now time.Time) {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	if a.total > 0 {
		a.writeSummary(now)
	}
	clear(a.written)
	clear(a.perClient)
	clear(a.kinds)
	clear(a.prefixes)
	a.start, a.total, a.other = time.Time{}, 0, 0
}

func (a *anonRefusals) writeSummary(now time.Time) {
	written := 0
	for _, n := range a.written {
		written += n
	}
	byReason := make(map[string]int64, len(a.kinds))
	for k, n := range a.kinds {
		name := k.decision
		if k.reason != "" {
			name += "/" + k.reason
		}
		byReason[name] = n
	}
	byPrefix := make(map[string]int64, len(a.prefixes)+1)
	for p, n := range a.prefixes {
		name := "unknown"
		if p.IsValid() {
			name = p.String()
		}
		byPrefix[name] += n
	}
	if a.other > 0 {
		byPrefix["other"] = a.other
	}
	from, to := a.start.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano)
	if a.logger != nil {
		if c := a.logger.Check(zapcore.InfoLevel, "requests denied, summarised"); c != nil {
			c.Write(zap.String("from", from), zap.String("to", to), zap.Int64("refused", a.total),
				zap.Int("written", written), zap.Any("by_reason", byReason), zap.Any("by_prefix", byPrefix))
		}
	}
	if a.audit != nil {
		a.audit.Log(audit.Entry{"event": "request.denied.summary", "from": from, "to": to, "refused": a.total,
			"written": written, "by_reason": byReason, "by_prefix": byPrefix})
	}
}
