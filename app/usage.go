package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/usage"
)

// DefaultUsageSaveInterval is how often usage counts are saved, and, when
// the counters are on Redis, added to it, unless a route says otherwise: a
// batch goes to Redis only once the usage file records it (see
// usage.Outbox).
const DefaultUsageSaveInterval = 10 * time.Second

// MinUsageSaveInterval is the shortest save interval a route may ask for:
// each save rewrites the usage file.
const MinUsageSaveInterval = 100 * time.Millisecond

// usageSendTimeout bounds one attempt to add the counts to Redis.
const usageSendTimeout = 5 * time.Second

// Usage is the pooled usage counts of one file, what of them Redis
// has not acknowledged yet, and the goroutine that saves them, prunes them
// and sends them to Redis.
type Usage struct {
	*usage.Counts
	outbox    *usage.Outbox
	path      string
	retention time.Duration
	every     time.Duration // how often it is saved and sent
	loadErr   error         // a corrupt file, set aside at start
	stop      chan struct{}
	kick      chan struct{} // a tick now: a Redis was joined
	done      chan struct{}
	once      sync.Once

	startMu sync.Mutex
	started bool
	stopped bool

	// flushMu makes taking, saving and sending one step at a time.
	flushMu sync.Mutex

	// cluster, when the counters are on Redis, sums every instance's
	// counts there: the Redis of the share named last of those the routes
	// in force name (see ShareOn).
	cluster    atomic.Pointer[usage.Cluster]
	mu         sync.Mutex // guards what follows
	shares     []*usageShare
	current    *usageShare
	destructed bool
}

// usageShare is one Redis the routes on a usage file name, and how many of
// them name it.
type usageShare struct {
	name    string
	cluster *usage.Cluster
	release func() // lets go of the client
	holders int
}

// ShareOn names the Redis the route's counters are on (name identifies it
// and prefix, for reports); the route calls the function it returns when
// it ends. The counts go to the Redis named last among those named by
// routes in force: a reload that moves the counters to another Redis moves
// the usage sums with them, pending counts included, and the Redis no
// route names any more is let go of, its connections closed. ShareOn keeps
// the client (release lets go of it) while a route names it, or until the
// tracker ends, so the last counts go up at shutdown.
func (t *Usage) ShareOn(client redis.UniversalClient, release func(), prefix, name string) (leave func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.destructed {
		release()
		return func() {}
	}
	var s *usageShare
	for _, held := range t.shares {
		if held.name == name {
			s = held
			release() // the share holds the client already
			break
		}
	}
	if s == nil {
		s = &usageShare{name: name, cluster: usage.NewCluster(client, prefix, t.retention), release: release}
		t.shares = append(t.shares, s)
	}
	s.holders++
	t.follow()
	var once sync.Once
	return func() { once.Do(func() { t.leave(s) }) }
}

// leave is a route's end: a share no route holds is let go of.
func (t *Usage) leave(s *usageShare) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.destructed {
		return // Destruct let go of every share
	}
	if s.holders--; s.holders > 0 {
		return
	}
	for i, held := range t.shares {
		if held == s {
			t.shares = append(t.shares[:i], t.shares[i+1:]...)
			break
		}
	}
	t.follow()
	s.release()
}

// follow makes the share named last the one the counts go to. What was
// counted up to the change is noted as pending for the Redis before (none,
// if there was none); what is pending goes to the new one. t.mu is held.
func (t *Usage) follow() {
	var next *usageShare
	if n := len(t.shares); n > 0 {
		next = t.shares[n-1]
	}
	if next == t.current {
		return
	}
	t.flushMu.Lock()
	t.outbox.Take(t.Counts, t.current != nil, time.Now().Add(-t.retention))
	t.current = next
	if next != nil {
		t.cluster.Store(next.cluster)
	} else {
		t.cluster.Store(nil)
	}
	t.flushMu.Unlock()
	if next != nil && t.outbox.Waiting() {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// clusterName names the Redis the counts are shared on, or "".
func (t *Usage) clusterName() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == nil {
		return ""
	}
	return t.current.name
}

// flush sends what the usage file records and Redis has not acknowledged,
// if the counts are shared there. It reports how many batches went.
func (t *Usage) flush() int {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	return t.send()
}

// send is flush with flushMu held.
func (t *Usage) send() int {
	cl := t.cluster.Load()
	if cl == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), usageSendTimeout)
	defer cancel()
	sent, err := t.outbox.Send(ctx, cl)
	if err != nil {
		trackingLogger().Warn("adding usage counts to redis failed; they are kept in the usage file and sent again next time",
			zap.Error(err))
	}
	return sent
}

// clusterReport answers a query from the cluster's sums in Redis, with
// what this instance counted and Redis does not hold yet added.
func (t *Usage) clusterReport(ctx context.Context, cl *usage.Cluster, query usage.Query, fromRedis bool) ([]usage.Row, error) {
	t.flush()
	var rows []usage.Row
	if fromRedis {
		var err error
		if rows, err = cl.Report(ctx, query); err != nil {
			return nil, err
		}
	}
	return append(rows, t.outbox.Report(t.Counts, query)...), nil
}

func trackingLogger() *zap.Logger { return caddy.Log().Named("http.handlers.apikey.usage") }

// DefaultUsageFile is where usage counts are saved when a route names no
// file: apikey/usage.json in Caddy's data directory.
func DefaultUsageFile() string {
	return filepath.Join(caddy.AppDataDir(), "apikey", "usage.json")
}

// OpenUsage returns the process's usage counts of the file at path (an
// absolute path), shared by every route that names it, across reloads,
// and the function that lets go of them. retention and every (how often
// the counts are saved and sent) are the first route's.
func OpenUsage(path string, retention, every time.Duration) (*Usage, func() error, error) {
	return load(usagePool, path, func() (*Usage, error) { return newUsage(path, retention, every), nil })
}

// SaveInterval is how often the counts are saved and sent: that of the
// route that opened the file first.
func (t *Usage) SaveInterval() time.Duration { return t.every }

func newUsage(path string, retention, every time.Duration) *Usage {
	t := &Usage{Counts: usage.New(), outbox: usage.NewOutbox(), path: path, retention: retention, every: every,
		stop: make(chan struct{}), kick: make(chan struct{}, 1), done: make(chan struct{})}
	if err := t.outbox.Load(t.Counts, path, time.Now()); err != nil {
		// A file that is not used at all: start from zero.
		t.Counts, t.outbox = usage.New(), usage.NewOutbox()
		if errors.Is(err, usage.ErrCorrupt) {
			t.loadErr = err // set aside when the config runs
		} else {
			trackingLogger().Error("usage file could not be read; started from zero", zap.String("file", path), zap.Error(err))
		}
	}
	return t
}

// Start sets a corrupt file aside and starts saving and sending, once: the
// first time a config that uses the counts runs. Until then nothing is
// written to the file or sent to Redis, so that validating a config (which
// provisions it, and never runs it) changes neither.
func (t *Usage) Start() {
	t.startMu.Lock()
	defer t.startMu.Unlock()
	if t.started || t.stopped {
		return
	}
	t.started = true
	if t.loadErr != nil {
		aside, renameErr := atomicfile.SetAside(t.path, time.Now())
		trackingLogger().Error("usage file is corrupt; set it aside and started from zero",
			zap.String("file", t.path), zap.String("set_aside_as", aside), zap.NamedError("rename_error", renameErr), zap.Error(t.loadErr))
	}
	go t.run()
}

func (t *Usage) run() {
	defer close(t.done)
	tick := time.NewTicker(t.every)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.tick()
		case <-t.kick:
			t.tick()
		}
	}
}

// tick prunes, notes what is new (pending for Redis, when shared there),
// saves, and sends what the saved file records; when that emptied a
// backlog (after an outage, or a start), what was counted meanwhile goes
// at once too. It reports whether a save failed, and how many batches
// went.
func (t *Usage) tick() (saveFailed bool, sent int) {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	for range 2 {
		cutoff := time.Now().Add(-t.retention)
		t.Prune(cutoff)
		t.outbox.Take(t.Counts, t.cluster.Load() != nil, cutoff)
		if err := t.outbox.Save(t.path); err != nil {
			trackingLogger().Error("saving usage failed; counts not saved are not sent to redis either",
				zap.String("file", t.path), zap.Error(err))
			return true, sent
		}
		n := t.send()
		sent += n
		if n == 0 || !t.outbox.Waiting() {
			break
		}
	}
	return false, sent
}

// Destruct saves and sends one last time, and lets go of the Redis; counts
// that never ran (a config only validated) are neither saved nor sent.
func (t *Usage) Destruct() error {
	t.startMu.Lock()
	started := t.started
	t.stopped = true
	t.startMu.Unlock()
	if started {
		t.finish()
	}
	t.mu.Lock()
	t.destructed = true
	for _, s := range t.shares {
		s.release()
	}
	t.shares, t.current = nil, nil
	t.cluster.Store(nil)
	t.mu.Unlock()
	return nil
}

// finish stops the goroutine, then saves and sends one last time.
func (t *Usage) finish() {
	t.once.Do(func() { close(t.stop) })
	<-t.done
	if failed, sent := t.tick(); !failed && sent > 0 {
		// The file recorded the batches before they went: record that
		// they went, so the next start has nothing to send again.
		t.flushMu.Lock()
		if err := t.outbox.Save(t.path); err != nil {
			trackingLogger().Error("saving usage failed", zap.String("file", t.path), zap.Error(err))
		}
		t.flushMu.Unlock()
	}
}

// UsageRows answers a usage query from every usage file the config's
// routes use, sorted: counts shared on Redis answer for the whole cluster
// (with what this instance counted and Redis does not hold yet), the
// others for this instance.
func (a *App) UsageRows(ctx context.Context, query usage.Query) ([]usage.Row, error) {
	rows := []usage.Row{}
	seen := map[*Usage]bool{}
	clusters := map[string]bool{}
	for _, r := range a.Routes() {
		u := r.Usage
		if u == nil || seen[u] {
			continue
		}
		seen[u] = true
		cl := u.cluster.Load()
		if cl == nil {
			rows = append(rows, u.Report(query)...)
			continue
		}
		name := u.clusterName()
		sums, err := u.clusterReport(ctx, cl, query, !clusters[name])
		if err != nil {
			return nil, fmt.Errorf("reading usage from redis: %w", err)
		}
		clusters[name] = true
		rows = append(rows, sums...)
	}
	return usage.MergeRows(rows), nil
}

// UsageRetention is the longest usage_retention of the usage files the
// config's routes use (the default when none is): no store holds hours
// older than that.
func (a *App) UsageRetention() time.Duration {
	var longest time.Duration
	for _, r := range a.Routes() {
		if r.Usage != nil {
			longest = max(longest, r.Usage.retention)
		}
	}
	if longest == 0 {
		longest = usage.DefaultRetention
	}
	return longest
}
