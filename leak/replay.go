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
	// replayMaxBytes bounds the answers' bytes together: an answer can be
	// about 1 MiB (1,000 matches, each echoing a 2,048-byte type).
	replayMaxBytes = 32 << 20
)

// replays remember the answer given to each signed report body, by its
// SHA-256, so that the same body again gets the same answer and causes
// nothing (no change, no audit entry, no event). A body forgotten (after
// replayKeep, or past replayMax answers or replayMaxBytes) is processed again, and still changes
// nothing: a key already marked leaked is left as it is.
type replays struct {
	mu    sync.Mutex
	seen  map[[sha256.Size]byte]replayed
	order [][sha256.Size]byte // oldest first
	bytes int                 // of the answers in seen
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
	if old, ok := r.seen[sum]; ok {
		r.bytes -= len(old.answer)
	} else {
		r.order = append(r.order, sum)
	}
	r.seen[sum] = replayed{answer: answer, at: now}
	r.bytes += len(answer)
	for len(r.order) > replayMax || r.bytes > replayMaxBytes || (len(r.order) > 0 && now.Sub(r.seen[r.order[0]].at) > replayKeep) {
		r.bytes -= len(r.seen[r.order[0]].answer)
		delete(r.seen, r.order[0])
		r.order = r.order[1:]
	}
}
