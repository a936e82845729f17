// Package usage counts admitted requests, and the LLM tokens their answers
// used, per key, service, method, endpoint and hour, with bounded
// cardinality and retention.
package usage

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and bounds.
const (
	DefaultDepth     = 2
	DefaultRetention = 30 * 24 * time.Hour

	// MaxSegment is the longest path segment counted as it is: a longer one
	// counts as ":id".
	MaxSegment = 40
	// MaxEndpointsPerKeyHour bounds the counters one key opens in an hour
	// (service × method × endpoint); past it, new endpoints count as
	// Other.
	MaxEndpointsPerKeyHour = 100
	// MaxSeries bounds every counter held; past it, new counters fold
	// into one per hour under the key id Other.
	MaxSeries = 100_000

	// Other names what the bounds folded together.
	Other = ":other"
	// OtherMethod is every method that is not a standard one.
	OtherMethod = "OTHER"
)

// Folds counts what the bounds folded, since the process started, for the
// metrics: requests whose method was not standard, whose endpoint passed
// the key's hourly bound, and whose counter passed MaxSeries.
var Folds struct {
	Method, Endpoint, Series atomic.Uint64
}

// Bucket names one counter: a key's requests to an endpoint in an hour.
type Bucket struct {
	KeyID    string `json:"key_id"`
	Service  string `json:"service"`
	Method   string `json:"method"`
	Endpoint string `json:"endpoint"`
	Hour     int64  `json:"hour"` // Unix seconds of the hour's start
}

// Tally is what one counter holds: requests, and the tokens of the LLM
// answers to them (the prompt's and the completion's, as the upstream
// reported them).
type Tally struct {
	Requests         int64 `json:"requests"`
	PromptTokens     int64 `json:"prompt_tokens,omitempty"`
	CompletionTokens int64 `json:"completion_tokens,omitempty"`
}

// Add adds o to t.
func (t *Tally) Add(o Tally) {
	t.Requests += o.Requests
	t.PromptTokens += o.PromptTokens
	t.CompletionTokens += o.CompletionTokens
}

const shards = 32

// Counts holds the counters, bounded: MaxEndpointsPerKeyHour per key and
// hour, MaxSeries in all. Safe for concurrent use; adding takes one of 32
// locks, chosen by key id.
type Counts struct {
	seed   maphash.Seed
	series atomic.Int64 // counters held, across shards
	shards [shards]countShard

	overflowMu sync.Mutex
	overflow   map[int64]Tally // by hour: what was folded past MaxSeries
}

type countShard struct {
	mu sync.Mutex
	m  map[Bucket]Tally
	// perKeyHour counts each key's counters in each hour.
	perKeyHour map[keyHour]int32
}

type keyHour struct {
	keyID string
	hour  int64
}

// New returns empty counts.
func New() *Counts {
	c := &Counts{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[Bucket]Tally)
		c.shards[i].perKeyHour = make(map[keyHour]int32)
	}
	return c
}

// Method is the method as usage counts it: a standard method, or
// OtherMethod, so that made-up methods cannot open counters.
func Method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return OtherMethod
}

// Add counts one request. method is folded by Method; endpoint should come
// from Endpoint. A counter that does not exist yet is opened within the
// bounds, or the request is folded into Other. It allocates only to open a
// counter.
func (c *Counts) Add(keyID, service, method, endpoint string, at time.Time) {
	if m := Method(method); m != method {
		Folds.Method.Add(1)
		method = m
	}
	c.count(Bucket{KeyID: keyID, Service: service, Method: method, Endpoint: endpoint, Hour: at.Unix() / 3600 * 3600},
		Tally{Requests: 1}, true)
}

// AddTokens adds the tokens an LLM answer used (negative numbers count as
// none) to the counter Add counts the request in, without counting a
// request: same folding of the method, same bounds. A counter that does not
// exist yet (an answer that ends in the next hour, say) is opened within the
// bounds, with no request, or the tokens are folded into Other as a request
// would be; Folds counts requests only, so it does not count these.
func (c *Counts) AddTokens(keyID, service, method, endpoint string, at time.Time, prompt, completion int64) {
	t := Tally{PromptTokens: max(prompt, 0), CompletionTokens: max(completion, 0)}
	if t == (Tally{}) {
		return
	}
	c.count(Bucket{KeyID: keyID, Service: service, Method: Method(method), Endpoint: endpoint, Hour: at.Unix() / 3600 * 3600},
		t, false)
}

// count adds t to b's counter, opening it within the bounds, or folds it:
// into the key's Other endpoint past MaxEndpointsPerKeyHour, into the
// hour's overflow past MaxSeries. request counts the folds in Folds.
func (c *Counts) count(b Bucket, t Tally, request bool) {
	sh := &c.shards[maphash.String(c.seed, b.KeyID)%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur, ok := sh.m[b]; ok {
		cur.Add(t)
		sh.m[b] = cur
		return
	}
	kh := keyHour{b.KeyID, b.Hour}
	if sh.perKeyHour[kh] >= MaxEndpointsPerKeyHour && b.Endpoint != Other {
		if request {
			Folds.Endpoint.Add(1)
		}
		b.Endpoint = Other
		if cur, ok := sh.m[b]; ok {
			cur.Add(t)
			sh.m[b] = cur
			return
		}
	}
	if c.series.Load() >= MaxSeries {
		if request {
			Folds.Series.Add(1)
		}
		c.putOverflow(b.Hour, t)
		return
	}
	// The endpoint may be part of a long request path: keep only its own
	// bytes.
	b.Endpoint = strings.Clone(b.Endpoint)
	sh.m[b] = t
	sh.perKeyHour[kh]++
	c.series.Add(1)
}

// putOverflow adds t to the hour's overflow counter, the one place counts
// go once MaxSeries is reached: one per hour, so the overflow stays bounded
// by the retention.
func (c *Counts) putOverflow(hour int64, t Tally) {
	// A map of its own, with its own lock: the caller may hold a shard's.
	c.overflowMu.Lock()
	if c.overflow == nil {
		c.overflow = map[int64]Tally{}
	}
	cur := c.overflow[hour]
	cur.Add(t)
	c.overflow[hour] = cur
	c.overflowMu.Unlock()
}

// Put adds a saved counter, within the same bounds as Add; a counter of
// the key id Other goes to its hour's overflow.
func (c *Counts) Put(b Bucket, t Tally) {
	if b.KeyID == Other {
		c.putOverflow(b.Hour, t)
		return
	}
	b.Method = Method(b.Method)
	c.count(b, t, false)
}

// Each calls fn for every counter, shard by shard, then the overflow's,
// under the key id Other. fn must not call c's methods.
func (c *Counts) Each(fn func(Bucket, Tally)) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for b, t := range sh.m {
			fn(b, t)
		}
		sh.mu.Unlock()
	}
	c.overflowMu.Lock()
	defer c.overflowMu.Unlock()
	for hour, t := range c.overflow {
		fn(Bucket{KeyID: Other, Service: Other, Method: OtherMethod, Endpoint: Other, Hour: hour}, t)
	}
}

// Len is the number of counters held, the overflow's not included.
func (c *Counts) Len() int { return int(c.series.Load()) }

// Prune drops hours that started before cutoff.
func (c *Counts) Prune(cutoff time.Time) {
	limit := cutoff.Unix()
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for b := range sh.m {
			if b.Hour < limit {
				delete(sh.m, b)
				c.series.Add(-1)
			}
		}
		for kh := range sh.perKeyHour {
			if kh.hour < limit {
				delete(sh.perKeyHour, kh)
			}
		}
		sh.mu.Unlock()
	}
	c.overflowMu.Lock()
	for hour := range c.overflow {
		if hour < limit {
			delete(c.overflow, hour)
		}
	}
	c.overflowMu.Unlock()
}

// Query selects and groups counters.
type Query struct {
	KeyID, Service string // empty: all
	From, To       time.Time
	// ByDay groups hours into UTC days.
	ByDay bool
}

// Row is one line of a usage report.
type Row struct {
	Time             time.Time `json:"time"`
	KeyID            string    `json:"key_id"`
	Service          string    `json:"service"`
	Method           string    `json:"method"`
	Endpoint         string    `json:"endpoint"`
	Requests         int64     `json:"requests"`
	PromptTokens     int64     `json:"prompt_tokens,omitempty"`
	CompletionTokens int64     `json:"completion_tokens,omitempty"`
}

// sortedRows makes the rows of sums, sorted.
func sortedRows(sums map[Bucket]Tally) []Row {
	rows := make([]Row, 0, len(sums))
	for b, t := range sums {
		rows = append(rows, Row{Time: time.Unix(b.Hour, 0).UTC(), KeyID: b.KeyID, Service: b.Service,
			Method: b.Method, Endpoint: b.Endpoint,
			Requests: t.Requests, PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens})
	}
	SortRows(rows)
	return rows
}

// Report answers a query, sorted by time, key, service, method, endpoint.
func (c *Counts) Report(q Query) []Row { return report(c.Each, q) }

// report answers a query from the counters each lists.
func report(each func(func(Bucket, Tally)), q Query) []Row {
	sums := map[Bucket]Tally{}
	from, to := q.From.Unix(), q.To.Unix()
	each(func(b Bucket, t Tally) {
		if (q.KeyID != "" && b.KeyID != q.KeyID) || (q.Service != "" && b.Service != q.Service) ||
			b.Hour < from/3600*3600 || b.Hour >= to {
			return
		}
		if q.ByDay {
			b.Hour = b.Hour / 86400 * 86400
		}
		sum := sums[b]
		sum.Add(t)
		sums[b] = sum
	})
	return sortedRows(sums)
}

// SortRows sorts rows as Report does: by time, key, service, method,
// endpoint.
func SortRows(rows []Row) {
	sort.Slice(rows, func(i, j int) bool { return rowLess(&rows[i], &rows[j]) })
}

// MergeRows sorts rows as Report does, and adds up the rows of one
// counter (one time, key, service, method and endpoint) into one.
func MergeRows(rows []Row) []Row {
	SortRows(rows)
	out := rows[:0]
	for _, r := range rows {
		if n := len(out); n > 0 && sameCounter(&out[n-1], &r) {
			out[n-1].Requests += r.Requests
			out[n-1].PromptTokens += r.PromptTokens
			out[n-1].CompletionTokens += r.CompletionTokens
			continue
		}
		out = append(out, r)
	}
	return out
}

func sameCounter(a, b *Row) bool {
	return a.Time.Equal(b.Time) && a.KeyID == b.KeyID && a.Service == b.Service && a.Method == b.Method && a.Endpoint == b.Endpoint
}

func rowLess(a, b *Row) bool {
	switch {
	case !a.Time.Equal(b.Time):
		return a.Time.Before(b.Time)
	case a.KeyID != b.KeyID:
		return a.KeyID < b.KeyID
	case a.Service != b.Service:
		return a.Service < b.Service
	case a.Method != b.Method:
		return a.Method < b.Method
	}
	return a.Endpoint < b.Endpoint
}

// Page returns at most limit of the sorted rows that come after the row
// after (all of them when after is nil), and the cursor of the next page,
// or "" when this page is the last. A cursor names a row's place, not an
// offset, so counters opened between two pages do not shift them.
func Page(rows []Row, after *Row, limit int) ([]Row, string) {
	start := 0
	if after != nil {
		start = sort.Search(len(rows), func(i int) bool { return rowLess(after, &rows[i]) })
	}
	rows = rows[start:]
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	last := rows[limit-1]
	b := binary.AppendVarint(nil, last.Time.Unix())
	for _, f := range []string{last.KeyID, last.Service, last.Method, last.Endpoint} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return rows, cursorEncoding.EncodeToString(b)
}

// ParseCursor reads a cursor Page made. The fields are kept byte for byte
// (a path may hold any bytes), so the next page starts exactly after.
func ParseCursor(s string) (*Row, error) {
	data, err := cursorEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	unix, n := binary.Varint(data)
	if n <= 0 {
		return nil, errBadCursor
	}
	data = data[n:]
	r := &Row{Time: time.Unix(unix, 0).UTC()}
	for _, dst := range []*string{&r.KeyID, &r.Service, &r.Method, &r.Endpoint} {
		size, n := binary.Uvarint(data)
		if n <= 0 || size > uint64(len(data)-n) {
			return nil, errBadCursor
		}
		*dst = string(data[n : n+int(size)])
		data = data[n+int(size):]
	}
	if len(data) != 0 {
		return nil, errBadCursor
	}
	return r, nil
}

var errBadCursor = errors.New("bad cursor")

// cursorEncoding writes cursors with letters that are not hex digits, so
// that a cursor never looks like a key's hash (which the admin API refuses
// in a URL), whatever endpoint it names.
var cursorEncoding = base32.NewEncoding("ghijklmnopqrstuvwxyzGHIJKLMNOPQR").WithPadding(base32.NoPadding)

// Endpoint cuts a path to its first depth segments and replaces segments
// that look like ids (all digits, UUIDs, long hex, anything longer than
// MaxSegment, tokens of letters mixed with digits) with ":id", so that the
// number of endpoints stays bounded. It allocates only when it replaces.
func Endpoint(path string, depth int) string {
	if path == "" || path[0] != '/' {
		path = "/"
	}
	end, n := 1, 0
	needsRewrite := false
	for i := 1; i <= len(path); i++ {
		if i == len(path) || path[i] == '/' {
			if seg := path[end:i]; seg != "" {
				n++
				if looksLikeID(seg) {
					needsRewrite = true
				}
			}
			if n == depth || i == len(path) {
				if !needsRewrite {
					return path[:i]
				}
				return rewrite(path[:i])
			}
			end = i + 1
		}
	}
	return path
}

func rewrite(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if s != "" && looksLikeID(s) {
			segs[i] = ":id"
		}
	}
	return strings.Join(segs, "/")
}

// looksLikeID reports all digits, a UUID, 16 or more hex digits, a segment
// longer than MaxSegment, or a token that looks random: 12 or more
// characters with letters and at least 3 digits among them.
func looksLikeID(s string) bool {
	if len(s) > MaxSegment {
		return true
	}
	digits, hex := true, true
	numDigits, numLetters := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		isDigit := c >= '0' && c <= '9'
		isHex := isDigit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
		if isDigit {
			numDigits++
		} else {
			digits = false
			if (c|0x20) >= 'a' && (c|0x20) <= 'z' {
				numLetters++
			}
		}
		if !isHex && !(c == '-' && len(s) == 36) {
			hex = false
		}
	}
	switch {
	case digits:
		return true
	case len(s) == 36 && hex && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-':
		return true
	case hex && len(s) >= 16 && !strings.Contains(s, "-"):
		return true
	}
	return len(s) >= 12 && numDigits >= 3 && numLetters > 0
}
