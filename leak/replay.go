package leak

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Bounds of the answers remembered for replayed reports.
const (
	replayKeep = 24 * time.Hour
	replayMax  = 10000
)

// replays remember the answer given to each signed report body, by its
// SHA-256, so that the same body again gets the same answer and causes
// nothing (no change, no audit entry, no event). A body forgotten (after
// replayKeep, or past replayMax) is processed again, and still changes
// nothing: a key already marked leaked is left as it is.
type replays struct {
	mu    sync.Mutex
	seen  map[[sha256.Size]byte]replayed
	order [][sha256.Size]byte // oldest first
}

type replayed struct {
	answer []byte
	at     time.Time
}

func (r *replays) get(body []byte, now time.Time) ([]byte, bool) {
	sum := sha256.Sum256(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.seen[sum]
	if !ok || now.Sub(e.at) > replayKeep {
		return nil, false
	}
	return e.answer, true
}

func (r *replays) put(body, answer []byte, now time.Time) {
	sum := sha256.Sum256(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[[sha256.Size]byte]replayed{}
	}
	if _, ok := r.seen[sum]; !ok {
		r.order = append(r.order, sum)
	}
	r.seen[sum] = replayed{answer: answer, at: now}
	for len(r.order) > replayMax || (len(r.order) > 0 && now.Sub(r.seen[r.order[0]].at) > replayKeep) {
		delete(r.seen, r.order[0])
		r.order = r.order[1:]
	}
}
