package usage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster adds one instance's counts to Redis, where every instance's are
// summed, and reads the sums back. Counts go up in batches (see Outbox),
// never from the request path. A batch's id is its outbox's own id and a
// sequence number; Redis keeps, per outbox, the number of the last batch
// it applied, so a batch whose answer was lost and is sent again (even
// from the usage file, after a restart) is not counted twice.
//
// Layout, under <prefix>{usage}: (one hash tag: every script touches one
// Cluster slot): h:<hour> is a hash of counter → requests for that hour,
// and of counter+"p" → prompt tokens and counter+"c" → completion tokens
// (fields a version that counted no tokens does not read), expiring
// retention after the hour; i:<outbox id> is the number of the outbox's
// last batch applied, kept retention plus two days.
type Cluster struct {
	client    redis.UniversalClient
	p         string
	retention time.Duration
}

// batchSize bounds the counters one script call adds.
const batchSize = 1000

// NewCluster returns the shared counts under keyPrefix.
func NewCluster(client redis.UniversalClient, keyPrefix string, retention time.Duration) *Cluster {
	return &Cluster{client: client, p: keyPrefix + "{usage}:", retention: retention}
}

// addScript applies a batch unless its outbox's last batch applied is this
// one or a later one: the mark and the sums are written together,
// atomically. KEYS[1] is the outbox's mark; ARGV: the batch's number, the
// mark's lifetime (s), then hash, field, increment, expiry (Unix s) for
// each field.
var addScript = redis.NewScript(`
if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 3, #ARGV, 4 do
  redis.call('HINCRBY', ARGV[i], ARGV[i+1], ARGV[i+2])
  redis.call('EXPIREAT', ARGV[i], ARGV[i+3])
end
return 1
`)

// batchID names a batch: its outbox's id (hex) and its number (from 1).
type batchID struct {
	outbox string
	seq    uint64
}

func (id batchID) String() string { return id.outbox + ":" + strconv.FormatUint(id.seq, 10) }

// parseBatchID reads what String wrote.
func parseBatchID(s string) (batchID, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 1 || i > 32 {
		return batchID{}, false
	}
	for _, c := range []byte(s[:i]) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return batchID{}, false
		}
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || seq == 0 || seq > 1<<53 { // exact in Lua's numbers
		return batchID{}, false
	}
	return batchID{s[:i], seq}, true
}

type delta struct {
	b Bucket
	t Tally
}

// send applies one batch, unless Redis applied it, or a later batch of its
// outbox, before.
func (cl *Cluster) send(ctx context.Context, id batchID, batch []delta) error {
	args := []any{id.seq, int64((cl.retention + 48*time.Hour) / time.Second)}
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
	if err := addScript.Run(ctx, cl.client, []string{cl.p + "i:" + id.outbox}, args...).Err(); err != nil {
		return fmt.Errorf("adding usage to redis: %w", err)
	}
	return nil
}

func (cl *Cluster) hourKey(hour int64) string { return cl.p + "h:" + strconv.FormatInt(hour, 10) }

// Report answers a query from the sums of every instance. Only the hours
// Redis may still hold are read (see Query.Clamp): one HGETALL an hour of
// the retention at most, whatever range q asks for.
func (cl *Cluster) Report(ctx context.Context, q Query) ([]Row, error) {
	q, _ = q.Clamp(time.Now(), cl.retention)
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
