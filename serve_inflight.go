package apikey

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/tokens"
)

// Request bodies held in memory. A route with tokens reads each request's
// body whole before the request is admitted (its model and limits are in
// it), and holds it until the request ends: the upstream is sent that copy.
// The gateway holds one copy, of exactly the body's size (a body of unknown
// length is read in pooled 64 KiB chunks, then copied once into a buffer of
// its size). The bytes held are counted per key and in all, and a body that
// would take either count over its cap is refused before it is read, or as
// soon as a body of unknown length reaches it: 429, reason inflight_body,
// when the key's own requests hold too much; 503, reason inflight_body, when
// all requests together do. Both come with Retry-After.
//
// A body is counted from the moment its read begins (its Content-Length, or
// chunk by chunk) until its request ends, however it ends: refused, answered,
// or cut by either side.
//
// The counts are the process's, kept in a caddy.UsagePool entry shared by
// every route with tokens and kept across config reloads: requests admitted
// under the old config still hold their bodies while the new one serves, and
// the caps bound what the process holds, not what one config does. Each
// route checks the counts against its own caps; routes that set different
// caps each refuse by their own.

// Defaults of max_inflight_body.
const (
	defaultInflightPerKey = 64 << 20
	defaultInflightTotal  = 512 << 20
)

const (
	// bodyChunk is how much of a body of unknown length is read at a time.
	bodyChunk = 64 << 10
	// bodySlack is room after a body for the field AskUsage appends, so
	// that a streamed request is not copied to get it.
	bodySlack = int64(tokens.AskUsageRoom)
	// heldShards spreads the per-key counts over locks.
	heldShards = 64
)

// InflightBody caps the bytes of request bodies a route with tokens holds in
// memory while their requests are in flight.
type InflightBody struct {
	// PerKey is the most one key's requests may hold together, in bytes;
	// a body over it gets 429 (reason inflight_body). Default 64 MiB. It
	// must be at least max_request_body.
	PerKey int64 `json:"per_key,omitempty"`

	// Total is the most all requests may hold together, in bytes; a body
	// over it gets 503 (reason inflight_body). Default 512 MiB. It must be
	// at least PerKey.
	Total int64 `json:"total,omitempty"`
}

// Refusals of a body that would be held over a cap.
var (
	errKeyBodies = errors.New("the key's requests hold the most request bodies they may")
	errAllBodies = errors.New("requests hold the most request bodies the gateway may")
)

// heldBodies counts the bytes of bodies held, per key id and in all.
type heldBodies struct {
	total  atomic.Int64
	seed   maphash.Seed
	shards [heldShards]struct {
		mu sync.Mutex
		m  map[string]int64
	}
}

// heldKey is the process's heldBodies' place in the app's shared pool,
// kept across reloads.
const heldKey = "apikey.held_bodies"

func newHeldBodies() *heldBodies {
	b := &heldBodies{seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].m = map[string]int64{}
	}
	return b
}

// Destruct lets the counts go with the last config that used them;
// requests still in flight give their bytes back to them all the same.
func (*heldBodies) Destruct() error { return nil }

// take counts n more bytes for keyID, unless that takes the key over perKey
// (errKeyBodies) or all keys over total (errAllBodies).
func (b *heldBodies) take(keyID string, n, perKey, total int64) error {
	sh := &b.shards[maphash.String(b.seed, keyID)%heldShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	held := sh.m[keyID]
	if held+n > perKey {
		return errKeyBodies
	}
	for {
		all := b.total.Load()
		if all+n > total {
			return errAllBodies
		}
		if b.total.CompareAndSwap(all, all+n) {
			break
		}
	}
	sh.m[keyID] = held + n
	return nil
}

// give counts n bytes of keyID's as no longer held.
func (b *heldBodies) give(keyID string, n int64) {
	sh := &b.shards[maphash.String(b.seed, keyID)%heldShards]
	sh.mu.Lock()
	if held := sh.m[keyID] - n; held > 0 {
		sh.m[keyID] = held
	} else {
		delete(sh.m, keyID) // the map holds only keys with bodies in flight
	}
	sh.mu.Unlock()
	b.total.Add(-n)
}

// held is what keyID's requests hold (every key's for ""), for the tests.
func (b *heldBodies) held(keyID string) int64 {
	if keyID == "" {
		return b.total.Load()
	}
	sh := &b.shards[maphash.String(b.seed, keyID)%heldShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[keyID]
}

// bodyHold is what one request holds: taken as its body is read, given back
// once, when the request ends (release).
type bodyHold struct {
	bodies        *heldBodies
	keyID         string
	perKey, total int64
	n             int64
}

func (h *bodyHold) take(n int64) error {
	if err := h.bodies.take(h.keyID, n, h.perKey, h.total); err != nil {
		return err
	}
	h.n += n
	return nil
}

// release gives back everything the request holds; it may be called again.
func (h *bodyHold) release() {
	if h.n > 0 {
		h.bodies.give(h.keyID, h.n)
		h.n = 0
	}
}

// giveBack gives back n of the bytes held, once they no longer are.
func (h *bodyHold) giveBack(n int64) {
	if n > 0 {
		h.bodies.give(h.keyID, n)
		h.n -= n
	}
}

// errBodyTooLarge is a body over max_request_body.
var errBodyTooLarge = errors.New("the request body is larger than the route reads")

// bodyChunks are the buffers bodies of unknown length are read into.
var bodyChunks = sync.Pool{New: func() any { return new([bodyChunk]byte) }}

// readHeldBody reads a request's body, of at most maxBody bytes, into one
// buffer of its size (with bodySlack to spare), counting what it holds in
// hold as it reads: a body of known length before it is read, one of
// unknown length chunk by chunk (then only its size, once copied).
func readHeldBody(body io.Reader, contentLength, maxBody int64, hold *bodyHold) ([]byte, error) {
	if contentLength >= 0 {
		if contentLength > maxBody {
			return nil, errBodyTooLarge
		}
		if err := hold.take(contentLength); err != nil {
			return nil, err
		}
		buf := make([]byte, contentLength, contentLength+bodySlack)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	var chunks []*[bodyChunk]byte
	defer func() {
		for _, c := range chunks {
			bodyChunks.Put(c)
		}
	}()
	var size int64
	for {
		want := min(bodyChunk, maxBody-size)
		if want == 0 {
			// At the most the route reads: only the end may follow.
			var probe [1]byte
			if n, _ := io.ReadFull(body, probe[:]); n > 0 {
				return nil, errBodyTooLarge
			}
			break
		}
		if err := hold.take(want); err != nil {
			return nil, err
		}
		c := bodyChunks.Get().(*[bodyChunk]byte)
		chunks = append(chunks, c)
		n, err := io.ReadFull(body, c[:want])
		size += int64(n)
		hold.giveBack(want - int64(n))
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	buf := make([]byte, 0, size+bodySlack)
	for _, c := range chunks {
		buf = append(buf, c[:min(bodyChunk, size-int64(len(buf)))]...)
	}
	return buf, nil
}

// allBodiesDenial refuses a body that would take all requests over their
// cap: 503, retried in a second.
func allBodiesDenial(f errorFormat) *denial {
	d := newDenial(f, http.StatusServiceUnavailable, decisionUnavailable, reasonInflightBody,
		"The gateway holds as many request bodies in memory as it may; retry shortly.")
	d.retryAfter = "1"
	return d
}

// provisionInflight resolves MaxInflightBody, on a route with tokens.
func (h *Handler) provisionInflight(tl *tokenLimits) error {
	tl.inflightPerKey, tl.inflightTotal = defaultInflightPerKey, defaultInflightTotal
	if c := h.MaxInflightBody; c != nil {
		if c.PerKey < 0 || c.Total < 0 {
			return errors.New("max_inflight_body: sizes must be positive")
		}
		if c.PerKey > 0 {
			tl.inflightPerKey = c.PerKey
		}
		if c.Total > 0 {
			tl.inflightTotal = c.Total
		} else if c.PerKey > defaultInflightTotal {
			tl.inflightTotal = c.PerKey
		}
	}
	if tl.inflightPerKey < tl.maxBody {
		return fmt.Errorf("max_inflight_body: the per-key cap (%d bytes) is below max_request_body (%d): a body of that size could never pass", tl.inflightPerKey, tl.maxBody)
	}
	if tl.inflightTotal < tl.inflightPerKey {
		return fmt.Errorf("max_inflight_body: the total (%d bytes) is below the per-key cap (%d)", tl.inflightTotal, tl.inflightPerKey)
	}
	return h.holdBodies()
}

// holdBodies takes the process's counts of bodies held, once.
func (h *Handler) holdBodies() error {
	if h.heldRelease != nil {
		return nil
	}
	held, release, err := app.Shared(heldKey, func() (*heldBodies, error) { return newHeldBodies(), nil })
	if err != nil {
		return err
	}
	h.held, h.heldRelease = held, release
	return nil
}

// provisionPeeks sets the caps on the body starts the method-override check
// reads (up to 64 KiB a request, on any route): the route's
// max_inflight_body on a route with tokens, its defaults elsewhere. They
// count with the bodies of routes with tokens, in the same counts.
func (h *Handler) provisionPeeks() error {
	h.peekPerKey, h.peekTotal = defaultInflightPerKey, defaultInflightTotal
	if h.tokens != nil {
		h.peekPerKey, h.peekTotal = h.tokens.inflightPerKey, h.tokens.inflightTotal
	}
	return h.holdBodies()
}
