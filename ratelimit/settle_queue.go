package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Settlements that Redis did not acknowledge are retried in the background.
// Each is safe to send again: a settlement, a cancellation or a charge is
// applied once per reservation id (see settleScript).
const (
	// maxPendingSettles bounds the queue: beyond it a settlement is
	// dropped (and logged by the caller), and its reservation is given
	// back by Redis when it expires.
	maxPendingSettles = 4096
	// settleRetryEvery is how often the queue is tried while Redis answers.
	settleRetryEvery = 250 * time.Millisecond
	// settleRetryFor is how long a settlement is retried before it is
	// dropped; well within reapedMarkTTL, so that one retried late still
	// finds its reservation's mark.
	settleRetryFor = 10 * time.Minute
)

// pendingSettle is one settlement, cancellation or charge to send to Redis.
type pendingSettle struct {
	key         string
	field       string // the reservation's id in Redis
	model       string // the model's field, "" for none
	day, minute int64
	dayEnd      int64 // for a local reservation's charge: its day's end
	used        int64
	mode        byte  // 's' settle, 'c' cancel, 'l' charge a local reservation's use
	since       int64 // when it was first tried, Unix ns
}

// args are settleScript's ARGV for the settlement.
func (ps pendingSettle) args() []any {
	return []any{ps.used, ps.field, string(ps.mode), ps.day, ps.minute, ps.model, maxTokenModels,
		int64(reapedMarkTTL / time.Second), ps.dayEnd}
}

// settleQueue holds the settlements to retry, oldest first.
type settleQueue struct {
	mu       sync.Mutex
	items    []pendingSettle
	inFlight int // taken by retrySettles, not yet acknowledged or put back
}

// add queues ps, unless the queue is full.
func (q *settleQueue) add(ps pendingSettle) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= maxPendingSettles {
		return false
	}
	q.items = append(q.items, ps)
	return true
}

// Len is the number of settlements waiting, those being sent included.
func (q *settleQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) + q.inFlight
}

// retrySettles sends the queued settlements in one pipeline bounded by
// timeout; those Redis acknowledged, and those past settleRetryFor, leave
// the queue.
func (sh *sharedRedis) retrySettles(timeout time.Duration) {
	sh.settles.mu.Lock()
	items := sh.settles.items
	sh.settles.items = nil
	sh.settles.inFlight = len(items)
	sh.settles.mu.Unlock()
	if len(items) == 0 {
		return
	}
	defer func() {
		sh.settles.mu.Lock()
		sh.settles.inFlight = 0
		sh.settles.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pipe := sh.client.Pipeline()
	cmds := make([]*redis.Cmd, len(items))
	for i, ps := range items {
		cmds[i] = settleScript.Eval(ctx, pipe, sh.tokenKeys(ps.key), ps.args()...)
	}
	_, _ = pipe.Exec(ctx)
	now := time.Now().UnixNano()
	var keep []pendingSettle
	dropped := 0
	for i, ps := range items {
		switch {
		case cmds[i].Err() == nil:
		case now-ps.since > int64(settleRetryFor):
			dropped++
		default:
			keep = append(keep, ps)
		}
	}
	if dropped > 0 {
		redisLogger().Error("token settlements were not acknowledged by redis in time and are dropped; their reservations are given back when they expire",
			zap.Int("dropped", dropped), zap.Duration("retried_for", settleRetryFor))
	}
	sh.settles.mu.Lock()
	sh.settles.inFlight = 0
	if len(keep) > 0 {
		// Those queued meanwhile go after: the queue stays oldest first.
		sh.settles.items = append(keep, sh.settles.items...)
		if len(sh.settles.items) > maxPendingSettles {
			sh.settles.items = sh.settles.items[:maxPendingSettles]
		}
	}
	sh.settles.mu.Unlock()
}
