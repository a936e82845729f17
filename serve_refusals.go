package apikey

import (
	"hash/maphash"
	"sync"
	"time"
)

// A key that keeps being refused (a client retrying a 403, or hammering
// after its quota ran out) must not grow the log, the audit log and the
// events by a line per request. Each key's refusals are written at most
// 10 times per minute for each decision and reason; the next line written
// says how many were not (field "repeated"). Every refusal is still counted
// in the metrics.

// refusalEvery and refusalBurst: one key's refusals of one kind are written
// refusalBurst times per refusalEvery at most.
const (
	refusalEvery = time.Minute
	refusalBurst = 10
)

// maxRefusalEntries bounds the keys×kinds remembered, per shard; when full
// of live windows, a refusal is counted but not written.
const maxRefusalEntries = 4096

const refusalShards = 16

type refusalKey struct{ keyID, decision, reason string }

type refusalWindow struct {
	start      int64 // Unix ns of the line that opened it
	written    int64
	suppressed int64
}

type refusalLog struct {
	anonMu sync.Mutex
	anon   map[string]*anonRefusals // by audit log path, "" for none
	seed   maphash.Seed
	shards [refusalShards]struct {
		mu sync.Mutex
		m  map[refusalKey]*refusalWindow
	}
}

// refusalsKey is the place in the app's shared pool of the one refusalLog
// every route shares, across reloads: one key's refusals are bounded
// together, however many routes refuse it.
const refusalsKey = "apikey.refusals"

func newRefusalLog() *refusalLog {
	l := &refusalLog{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[refusalKey]*refusalWindow{}
	}
	return l
}

// Destruct lets the log go with the last config that used it.
func (*refusalLog) Destruct() error { return nil }

// admit reports whether this refusal is written, and how many of its kind
// were not since the last one that was.
func (l *refusalLog) admit(k refusalKey, now time.Time) (write bool, repeated int64) {
	sh := &l.shards[maphash.String(l.seed, k.keyID)%refusalShards]
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	w := sh.m[k]
	if w != nil && t < w.start+int64(refusalEvery) {
		if w.written < refusalBurst {
			w.written++
			return true, 0
		}
		w.suppressed++
		return false, 0
	}
	if w == nil {
		if len(sh.m) >= maxRefusalEntries {
			for key, old := range sh.m {
				if t >= old.start+int64(refusalEvery) && old.suppressed == 0 {
					delete(sh.m, key)
				}
			}
			if len(sh.m) >= maxRefusalEntries {
				return false, 0
			}
		}
		w = &refusalWindow{}
		sh.m[k] = w
	}
	repeated = w.suppressed
	w.start, w.written, w.suppressed = t, 1, 0
	return true, repeated
}
