// Package usage counts admitted requests per key, service, method, endpoint
// and hour, with bounded cardinality and retention.
package usage

import (
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults.
const (
	DefaultDepth     = 2
	DefaultRetention = 30 * 24 * time.Hour
)

// Bucket names one counter: a key's requests to an endpoint in an hour.
type Bucket struct {
	KeyID    string `json:"key_id"`
	Service  string `json:"service"`
	Method   string `json:"method"`
	Endpoint string `json:"endpoint"`
	Hour     int64  `json:"hour"` // Unix seconds of the hour's start
}

const shards = 32

// Counts holds the counters. Safe for concurrent use; adding takes one of
// 32 locks, chosen by key id.
type Counts struct {
	seed   maphash.Seed
	shards [shards]struct {
		mu sync.Mutex
		m  map[Bucket]int64
	}
}

// New returns empty counts.
func New() *Counts {
	c := &Counts{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[Bucket]int64)
	}
	return c
}

// Add counts one request.
func (c *Counts) Add(keyID, service, method, endpoint string, at time.Time) {
	b := Bucket{KeyID: keyID, Service: service, Method: method, Endpoint: endpoint, Hour: at.Unix() / 3600 * 3600}
	sh := &c.shards[maphash.String(c.seed, keyID)%shards]
	sh.mu.Lock()
	sh.m[b]++
	sh.mu.Unlock()
}

// Put sets a counter, for loading saved counts.
func (c *Counts) Put(b Bucket, n int64) {
	sh := &c.shards[maphash.String(c.seed, b.KeyID)%shards]
	sh.mu.Lock()
	sh.m[b] += n
	sh.mu.Unlock()
}

// Each calls fn for every counter, shard by shard.
func (c *Counts) Each(fn func(Bucket, int64)) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for b, n := range sh.m {
			fn(b, n)
		}
		sh.mu.Unlock()
	}
}

// Prune drops hours that started before cutoff.
func (c *Counts) Prune(cutoff time.Time) {
	limit := cutoff.Unix()
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for b := range sh.m {
			if b.Hour < limit {
				delete(sh.m, b)
			}
		}
		sh.mu.Unlock()
	}
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
	Time     time.Time `json:"time"`
	KeyID    string    `json:"key_id"`
	Service  string    `json:"service"`
	Method   string    `json:"method"`
	Endpoint string    `json:"endpoint"`
	Requests int64     `json:"requests"`
}

// Report answers a query, sorted by time, key, service, method, endpoint.
func (c *Counts) Report(q Query) []Row {
	sums := map[Bucket]int64{}
	from, to := q.From.Unix(), q.To.Unix()
	c.Each(func(b Bucket, n int64) {
		if (q.KeyID != "" && b.KeyID != q.KeyID) || (q.Service != "" && b.Service != q.Service) ||
			b.Hour < from/3600*3600 || b.Hour >= to {
			return
		}
		if q.ByDay {
			b.Hour = b.Hour / 86400 * 86400
		}
		sums[b] += n
	})
	rows := make([]Row, 0, len(sums))
	for b, n := range sums {
		rows = append(rows, Row{Time: time.Unix(b.Hour, 0).UTC(), KeyID: b.KeyID, Service: b.Service,
			Method: b.Method, Endpoint: b.Endpoint, Requests: n})
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
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
	})
	return rows
}

// Endpoint cuts a path to its first depth segments and replaces segments
// that look like ids (all digits, UUIDs, long hex) with ":id", so that the
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

// looksLikeID reports all digits, a UUID, or 16 or more hex digits.
func looksLikeID(s string) bool {
	digits, hex := true, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		isDigit := c >= '0' && c <= '9'
		isHex := isDigit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
		if !isDigit {
			digits = false
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
	}
	return hex && len(s) >= 16 && !strings.Contains(s, "-")
}
