package usage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster adds one instance's counts to Redis, where every instance's are
// summed, and reads the sums back. Counts go up in batches (see Outbox),
// never from the request path; each batch has an id that Redis remembers
// for two days, so a batch whose answer was lost and is sent again is not
// counted twice.
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
}

// batchSize bounds the counters one script call adds.
const batchSize = 1000

// batchMarkTTL is how long Redis remembers a batch it applied.
const batchMarkTTL = 48 * time.Hour

// NewCluster returns the shared counts under keyPrefix.
func NewCluster(client redis.UniversalClient, keyPrefix string, retention time.Duration) *Cluster {
	return &Cluster{client: client, p: keyPrefix + "{usage}:", retention: retention}
}

var addScript = redis.NewScript(`
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) == false then return 0 end
for i = 2, #ARGV, 4 do
  redis.call('HINCRBY', ARGV[i], ARGV[i+1], ARGV[i+2])
  redis.call('EXPIREAT', ARGV[i], ARGV[i+3])
end
return 1
`)

type delta struct {
	b Bucket
	t Tally
}

// send applies one batch under its id, unless Redis applied it before: the
// mark and the sums are written by one script, atomically.
func (cl *Cluster) send(ctx context.Context, id string, batch []delta) error {
	args := []any{int64(batchMarkTTL / time.Second)}
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
	return nil
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
