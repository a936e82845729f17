package apikey

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/usage"
)

// usageSaveEvery is how often usage counts are saved; usageFlushEvery how
// often they are added to Redis, when the counters are there.
const (
	usageSaveEvery  = 10 * time.Second
	usageFlushEvery = 5 * time.Second
)

// usagePool shares usage counts per file among every route, across reloads.
var usagePool = caddy.NewUsagePool()

// usageTracker is the pooled usage counts of one file and the goroutine
// that saves and prunes them.
type usageTracker struct {
	*usage.Counts
	path      string
	retention time.Duration
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once

	// cluster, when the counters are on Redis, sums every instance's
	// counts there; the first route that names a Redis sets it.
	cluster      atomic.Pointer[usage.Cluster]
	clusterKey   string
	clusterMu    sync.Mutex
	releaseRedis func()
}

// shareOn adds this instance's counts to Redis from now on, if no Redis was
// named before; it keeps the client until the tracker ends (release), so
// the last counts go up at shutdown. name identifies the Redis and prefix,
// for reports. What the tracker counted before (its file's counts) is taken
// as added already: an instance that restarts must not add its history
// again.
func (t *usageTracker) shareOn(client redis.UniversalClient, release func(), prefix, name string) {
	t.clusterMu.Lock()
	defer t.clusterMu.Unlock()
	if t.cluster.Load() != nil {
		release()
		return
	}
	cl := usage.NewCluster(client, prefix, t.retention)
	cl.MarkFlushed(t.Counts)
	t.cluster.Store(cl)
	t.clusterKey, t.releaseRedis = name, release
}

// clusterName names the Redis the counts are shared on, or "".
func (t *usageTracker) clusterName() string {
	t.clusterMu.Lock()
	defer t.clusterMu.Unlock()
	return t.clusterKey
}

// flush adds the new counts to Redis, if shared there.
func (t *usageTracker) flush() {
	if cl := t.cluster.Load(); cl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cl.Flush(ctx, t.Counts); err != nil {
			trackingLogger().Warn("adding usage counts to redis failed; they are sent again next time", zap.Error(err))
		}
	}
}

func trackingLogger() *zap.Logger { return caddy.Log().Named("http.handlers.apikey.usage") }

func defaultUsageFile() string {
	return filepath.Join(caddy.AppDataDir(), "apikey", "usage.json")
}

func openUsage(path string, retention time.Duration) *usageTracker {
	t := &usageTracker{Counts: usage.New(), path: path, retention: retention,
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := t.Load(path, time.Now()); err != nil {
		if errors.Is(err, usage.ErrCorrupt) {
			aside, renameErr := atomicfile.SetAside(path, time.Now())
			trackingLogger().Error("usage file is corrupt; set it aside and started from zero",
				zap.String("file", path), zap.String("set_aside_as", aside), zap.NamedError("rename_error", renameErr), zap.Error(err))
		} else {
			trackingLogger().Error("usage file could not be read; started from zero", zap.String("file", path), zap.Error(err))
		}
	}
	go t.run()
	return t
}

func (t *usageTracker) run() {
	defer close(t.done)
	tick := time.NewTicker(usageSaveEvery)
	defer tick.Stop()
	flush := time.NewTicker(usageFlushEvery)
	defer flush.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.save()
		case <-flush.C:
			t.flush()
		}
	}
}

func (t *usageTracker) save() {
	t.Prune(time.Now().Add(-t.retention))
	if err := t.Save(t.path); err != nil {
		trackingLogger().Error("saving usage failed", zap.String("file", t.path), zap.Error(err))
	}
}

// Destruct saves one last time and stops.
func (t *usageTracker) Destruct() error {
	t.once.Do(func() { close(t.stop) })
	<-t.done
	t.save()
	t.flush()
	t.clusterMu.Lock()
	if t.releaseRedis != nil {
		t.releaseRedis()
	}
	t.clusterMu.Unlock()
	return nil
}

// auditPool shares one writer per audit log among every route, across reloads.
var auditPool = caddy.NewUsagePool()

type pooledAudit struct{ *audit.Writer }

func (p pooledAudit) Destruct() error {
	p.Close()
	return nil
}

func openAudit(path string) (*audit.Writer, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	val, _, err := auditPool.LoadOrNew(abs, func() (caddy.Destructor, error) {
		return pooledAudit{audit.NewWriter(abs, func() *zap.Logger { return caddy.Log().Named("http.handlers.apikey.audit") })}, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(pooledAudit).Writer, nil
}
