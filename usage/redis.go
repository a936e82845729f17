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
// and of counter+"p" → prompt tokens and counter+"c" → completion tokens
// (fields a version that counted no tokens does not read), expiring
// retention after the hour; b:<batch id> marks a batch applied, requests
// and tokens together.
type Cluster struct {
	client    redis.UniversalClient
	p         string
	retention time.Duration
	instance  string

	mu        sync.Mutex
	flushed   map[Bucket]Tally // what this instance has added so far
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
		instance: hex.EncodeToString(id), flushed: map[Bucket]Tally{}}
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
	c.Each(func(b Bucket, t Tally) {
		f := cl.flushed[b]
		d := Tally{Requests: max(t.Requests-f.Requests, 0), PromptTokens: max(t.PromptTokens-f.PromptTokens, 0),
			CompletionTokens: max(t.CompletionTokens-f.CompletionTokens, 0)}
		if d != (Tally{}) {
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
		c.Each(func(b Bucket, _ Tally) { held[b] = true })
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
	t Tally
}

// send applies one batch under its id, and counts it as flushed.
func (cl *Cluster) send(ctx context.Context, id string, batch []delta) error {
	args := []any{int64(48 * time.Hour / time.Second)}
	for _, d := range batch {
		key, field, expire := cl.hourKey(d.b.Hour), encodeCounter(d.b), d.b.Hour+int64(cl.retention/time.Second)+3600
		for _, part := range [...]struct {
			suffix string
			n      int64
		}{{"", d.t.Requests}, {promptSuffix, d.t.PromptTokens}, {completionSuffix, d.t.CompletionTokens}} {
			if part.n > 0 {
				args = append(args, key, field+part.suffix, part.n, expire)
			}
		}
	}
	if err := addScript.Run(ctx, cl.client, []string{cl.p + "b:" + id}, args...).Err(); err != nil {
		return fmt.Errorf("adding usage to redis: %w", err)
	}
	for _, d := range batch {
		f := cl.flushed[d.b]
		f.Add(d.t)
		cl.flushed[d.b] = f
	}
	return nil
}

// MarkFlushed takes what c holds now as added already: the counts an
// instance saved before it shared them on Redis, or before a restart.
func (cl *Cluster) MarkFlushed(c *Counts) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	c.Each(func(b Bucket, t Tally) { cl.flushed[b] = t })
}

func (cl *Cluster) hourKey(hour int64) string { return cl.p + "h:" + strconv.FormatInt(hour, 10) }

// Report answers a query from the sums of every instance.
func (cl *Cluster) Report(ctx context.Context, q Query) ([]Row, error) {
	from := q.From.Unix() / 3600 * 3600
	sums := map[Bucket]Tally{}
	// A day's hours in one round trip: a 30-day report is 30 of them, not 720.
	for start := from; start < q.To.Unix(); start += reportBatch * 3600 {
		pipe := cl.client.Pipeline()
		var cmds []*redis.MapStringStringCmd
		var hours []int64
		for hour := start; hour < q.To.Unix() && hour < start+reportBatch*3600; hour += 3600 {
			cmds = append(cmds, pipe.HGetAll(ctx, cl.hourKey(hour)))
			hours = append(hours, hour)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, cmd := range cmds {
			fields, err := cmd.Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, err
			}
			cl.sum(sums, fields, hours[i], q)
		}
	}
	return sortedRows(sums), nil
}

// reportBatch is how many hours Report asks for in one round trip.
const reportBatch = 24

// sum adds one hour's fields to sums, as q selects and groups them.
func (cl *Cluster) sum(sums map[Bucket]Tally, fields map[string]string, hour int64, q Query) {
	for field, v := range fields {
		b, part, ok := decodeCounter(field)
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
		sum := sums[b]
		switch part {
		case "":
			sum.Requests += n
		case promptSuffix:
			sum.PromptTokens += n
		case completionSuffix:
			sum.CompletionTokens += n
		}
		sums[b] = sum
	}
}

// The suffixes, after a counter's name, of the fields of its tokens.
const (
	promptSuffix     = "p"
	completionSuffix = "c"
)

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

// decodeCounter reads a field's name: the counter, and what the field
// holds: "" (requests), promptSuffix or completionSuffix.
func decodeCounter(s string) (b Bucket, part string, ok bool) {
	data := []byte(s)
	for _, dst := range []*string{&b.KeyID, &b.Service, &b.Method, &b.Endpoint} {
		size, n := binary.Uvarint(data)
		if n <= 0 || size > uint64(len(data)-n) {
			return Bucket{}, "", false
		}
		*dst = string(data[n : n+int(size)])
		data = data[n+int(size):]
	}
	part = string(data)
	ok = b.KeyID != "" && (part == "" || part == promptSuffix || part == completionSuffix)
	return b, part, ok
}
