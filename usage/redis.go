package usage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster adds one instance's counts to Redis, where every instance's are
// summed, and reads the sums back. Counts go up in batches (Flush, every
// few seconds and at shutdown), never from the request path; each batch
// has an id that Redis remembers, so a batch whose answer was lost and is
// sent again is not counted twice.
//
// Layout, under <prefix>{usage}: (one hash tag: every script touches one
// Cluster slot): h:<hour> is a hash of counter → requests for that hour,
// expiring retention after the hour; b:<batch id> marks a batch applied.
type Cluster struct {
	client    redis.UniversalClient
	p         string
	retention time.Duration
	instance  string

	mu        sync.Mutex
	flushed   map[Bucket]int64 // what this instance has added so far
	seq       uint64
	pending   []delta // a batch that failed, to send again first
	pendingID string
}

// batchSize bounds the counters one script call adds.
const batchSize = 1000

// NewCluster returns the shared counts under keyPrefix.
func NewCluster(client redis.UniversalClient, keyPrefix string, retention time.Duration) *Cluster {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	return &Cluster{client: client, p: keyPrefix + "{usage}:", retention: retention,
		instance: hex.EncodeToString(id), flushed: map[Bucket]int64{}}
}

var addScript = redis.NewScript(`
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) == false then return 0 end
for i = 2, #ARGV, 4 do
  redis.call('HINCRBY', ARGV[i], ARGV[i+1], ARGV[i+2])
  redis.call('EXPIREAT', ARGV[i], ARGV[i+3])
end
return 1
`)

// Flush adds what c counted since the last flush. A batch that fails is
// sent again first at the next flush, with the same id and content, so it
// is applied once however often it is sent.
func (cl *Cluster) Flush(ctx context.Context, c *Counts) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.pending != nil {
		if err := cl.send(ctx, cl.pendingID, cl.pending); err != nil {
			return err
		}
		cl.pending = nil
	}
	var deltas []delta
	c.Each(func(b Bucket, n int64) {
		if d := n - cl.flushed[b]; d > 0 {
			deltas = append(deltas, delta{b, d})
		}
	})
	for start := 0; start < len(deltas); start += batchSize {
		batch := deltas[start:min(start+batchSize, len(deltas))]
		cl.seq++
		id := cl.instance + ":" + strconv.FormatUint(cl.seq, 10)
		if err := cl.send(ctx, id, batch); err != nil {
			cl.pending, cl.pendingID = batch, id
			return err
		}
	}
	// Forget what the local counts no longer hold (pruned hours).
	if len(cl.flushed) > c.Len()+1 {
		held := make(map[Bucket]bool, c.Len())
		c.Each(func(b Bucket, _ int64) { held[b] = true })
		for b := range cl.flushed {
			if !held[b] {
				delete(cl.flushed, b)
			}
		}
	}
	return nil
}

type delta struct {
	b Bucket
	n int64
}

// send applies one batch under its id, and counts it as flushed.
func (cl *Cluster) send(ctx context.Context, id string, batch []delta) error {
	args := []any{int64(48 * time.Hour / time.Second)}
	for _, d := range batch {
		args = append(args, cl.hourKey(d.b.Hour), encodeCounter(d.b), d.n, d.b.Hour+int64(cl.retention/time.Second)+3600)
	}
	if err := addScript.Run(ctx, cl.client, []string{cl.p + "b:" + id}, args...).Err(); err != nil {
		return fmt.Errorf("adding usage to redis: %w", err)
	}
	for _, d := range batch {
		cl.flushed[d.b] += d.n
	}
	return nil
}

// MarkFlushed takes what c holds now as added already: the counts an
// instance saved before it shared them on Redis, or before a restart.
func (cl *Cluster) MarkFlushed(c *Counts) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	c.Each(func(b Bucket, n int64) { cl.flushed[b] = n })
}

func (cl *Cluster) hourKey(hour int64) string { return cl.p + "h:" + strconv.FormatInt(hour, 10) }

// Report answers a query from the sums of every instance.
func (cl *Cluster) Report(ctx context.Context, q Query) ([]Row, error) {
	from := q.From.Unix() / 3600 * 3600
	sums := map[Bucket]int64{}
	for hour := from; hour < q.To.Unix(); hour += 3600 {
		fields, err := cl.client.HGetAll(ctx, cl.hourKey(hour)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for field, v := range fields {
			b, ok := decodeCounter(field)
			n, err := strconv.ParseInt(v, 10, 64)
			if !ok || err != nil || n <= 0 {
				continue // not ours, or damaged: not counted
			}
			if (q.KeyID != "" && b.KeyID != q.KeyID) || (q.Service != "" && b.Service != q.Service) {
				continue
			}
			b.Hour = hour
			if q.ByDay {
				b.Hour = hour / 86400 * 86400
			}
			sums[b] += n
		}
	}
	rows := make([]Row, 0, len(sums))
	for b, n := range sums {
		rows = append(rows, Row{Time: time.Unix(b.Hour, 0).UTC(), KeyID: b.KeyID, Service: b.Service,
			Method: b.Method, Endpoint: b.Endpoint, Requests: n})
	}
	SortRows(rows)
	return rows, nil
}

// encodeCounter names a counter within its hour: its fields, each with its
// length, so any bytes a path holds survive.
func encodeCounter(b Bucket) string {
	var out []byte
	for _, f := range []string{b.KeyID, b.Service, b.Method, b.Endpoint} {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return string(out)
}

func decodeCounter(s string) (Bucket, bool) {
	var b Bucket
	data := []byte(s)
	for _, dst := range []*string{&b.KeyID, &b.Service, &b.Method, &b.Endpoint} {
		size, n := binary.Uvarint(data)
		if n <= 0 || size > uint64(len(data)-n) {
			return Bucket{}, false
		}
		*dst = string(data[n : n+int(size)])
		data = data[n+int(size):]
	}
	return b, len(data) == 0 && b.KeyID != ""
}
