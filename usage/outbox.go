package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// Outbox is what an instance counted that Redis has not acknowledged yet,
// and the usage file that keeps it across restarts. Counts go to Redis in
// batches, numbered in order, of which Redis remembers the last it applied
// (see Cluster), and a batch is sent only once the usage file records it
// (Save): whatever stops the instance before Redis acknowledged a batch,
// it sends it again, with the same id, when it starts again, and Redis
// applies it once. A crash
// (kill -9) loses what was counted since the last Save, never counts
// anything twice; a clean stop saves last, and loses nothing.
//
// Take, Save and Send are meant to be called one after the other, from
// one goroutine at a time; Report may be called meanwhile.
type Outbox struct {
	mu sync.Mutex
	// seen is the counts as the last Take saw them: what Save writes as
	// the counts, so that the file's counts and what it holds as pending
	// are one snapshot.
	seen map[Bucket]Tally
	// unsent is what was counted while the counts went to a Redis, in no
	// batch yet.
	unsent map[Bucket]Tally
	// batches are out, oldest first: at most one Take's worth at a time.
	batches  []*outBatch
	instance string
	seq      uint64
}

type outBatch struct {
	id      batchID
	counts  []delta
	durable bool // a saved usage file records it
}

// NewOutbox returns an empty outbox; its batch ids start with 16 random
// hex digits of its own, its id.
func NewOutbox() *Outbox {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	return &Outbox{seen: map[Bucket]Tally{}, unsent: map[Bucket]Tally{}, instance: hex.EncodeToString(id)}
}

// Load adds the counters saved in path to c (as Counts.Load does), and
// takes what the file records as pending for Redis: batches to send again
// with their ids, and counts in no batch yet. o must be empty.
func (o *Outbox) Load(c *Counts, path string, now time.Time) error {
	f, err := readFile(path, now)
	if err != nil || f == nil {
		return err
	}
	for _, sc := range f.Counts {
		c.Put(sc.Bucket, sc.Tally)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c.Each(func(b Bucket, t Tally) { o.seen[b] = t })
	if f.Redis == nil {
		return nil
	}
	for _, sc := range f.Redis.Unsent {
		addTo(o.unsent, sc.Bucket, sc.Tally)
	}
	for _, sb := range f.Redis.Batches {
		id, _ := parseBatchID(sb.ID) // readFile checked it
		b := &outBatch{id: id, durable: true}
		for _, sc := range sb.Counts {
			b.counts = append(b.counts, delta{sc.Bucket, sc.Tally})
		}
		o.batches = append(o.batches, b)
	}
	return nil
}

func addTo(m map[Bucket]Tally, b Bucket, t Tally) {
	sum := m[b]
	sum.Add(t)
	m[b] = sum
}

// Take notes what c counted since the last Take. shared says whether the
// counts go to a Redis: only then is what is new pending for it (what was
// pending before stays pending either way). When shared and no batch is
// out, what is pending is made into batches, of batchSize counters at
// most; they go out once Save has recorded them. Hours that started before
// cutoff are forgotten, as c.Prune forgets them.
func (o *Outbox) Take(c *Counts, shared bool, cutoff time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	limit := cutoff.Unix()
	for b := range o.seen {
		if b.Hour < limit {
			delete(o.seen, b)
		}
	}
	for b := range o.unsent {
		if b.Hour < limit {
			delete(o.unsent, b)
		}
	}
	c.Each(func(b Bucket, t Tally) {
		if b.Hour < limit {
			return
		}
		seen := o.seen[b]
		if shared {
			if d := newSince(t, seen); d != (Tally{}) {
				addTo(o.unsent, b, d)
			}
		}
		if t != seen {
			o.seen[b] = t
		}
	})
	if !shared || len(o.batches) > 0 || len(o.unsent) == 0 {
		return
	}
	var b *outBatch
	for bk, t := range o.unsent {
		if b == nil || len(b.counts) == batchSize {
			o.seq++
			b = &outBatch{id: batchID{o.instance, o.seq}}
			o.batches = append(o.batches, b)
		}
		b.counts = append(b.counts, delta{bk, t})
	}
	clear(o.unsent)
}

// newSince is what t counts beyond seen, none negative.
func newSince(t, seen Tally) Tally {
	return Tally{Requests: max(t.Requests-seen.Requests, 0), PromptTokens: max(t.PromptTokens-seen.PromptTokens, 0),
		CompletionTokens: max(t.CompletionTokens-seen.CompletionTokens, 0)}
}

// Save writes to path, atomically, the counts as the last Take saw them
// and what is pending for Redis; the batches it records may go out from
// then on.
func (o *Outbox) Save(path string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := savedFile{Counts: make([]savedCount, 0, len(o.seen))}
	for b, t := range o.seen {
		f.Counts = append(f.Counts, savedCount{b, t})
	}
	if len(o.unsent) > 0 || len(o.batches) > 0 {
		f.Redis = &savedPending{}
		for _, b := range o.batches {
			sb := savedBatch{ID: b.id.String(), Counts: make([]savedCount, len(b.counts))}
			for i, d := range b.counts {
				sb.Counts[i] = savedCount{d.b, d.t}
			}
			f.Redis.Batches = append(f.Redis.Batches, sb)
		}
		for b, t := range o.unsent {
			f.Redis.Unsent = append(f.Redis.Unsent, savedCount{b, t})
		}
	}
	if err := writeFile(path, &f); err != nil {
		return err
	}
	for _, b := range o.batches {
		b.durable = true
	}
	return nil
}

// Send sends the batches a saved file records to cl, oldest first, and
// forgets each one Redis acknowledged; it stops at the first that fails,
// to send it again next time. It reports how many went.
func (o *Outbox) Send(ctx context.Context, cl *Cluster) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	sent := 0
	for len(o.batches) > 0 && o.batches[0].durable {
		if err := cl.send(ctx, o.batches[0].id, o.batches[0].counts); err != nil {
			return sent, err
		}
		o.batches[0] = nil
		o.batches = o.batches[1:]
		sent++
	}
	if len(o.batches) == 0 {
		o.batches = nil
	}
	return sent, nil
}

// Waiting reports whether anything waits for Redis: a batch out, or counts
// in none yet.
func (o *Outbox) Waiting() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.batches) > 0 || len(o.unsent) > 0
}

// Report answers q from what c counted that Redis does not hold yet, and
// that this instance sends it next: counts in no batch, in a batch not yet
// saved, or counted since the last Take. Added to Cluster.Report, it gives
// the cluster's sums with this instance's newest counts. (A batch sent
// whose answer did not come is left out: it may be in Redis already.)
func (o *Outbox) Report(c *Counts, q Query) []Row {
	o.mu.Lock()
	defer o.mu.Unlock()
	pending := map[Bucket]Tally{}
	for b, t := range o.unsent {
		addTo(pending, b, t)
	}
	for _, b := range o.batches {
		if !b.durable {
			for _, d := range b.counts {
				addTo(pending, d.b, d.t)
			}
		}
	}
	c.Each(func(b Bucket, t Tally) {
		if d := newSince(t, o.seen[b]); d != (Tally{}) {
			addTo(pending, b, d)
		}
	})
	return report(func(fn func(Bucket, Tally)) {
		for b, t := range pending {
			fn(b, t)
		}
	}, q)
}
