package apikey

import (
	"errors"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/usage"
)

// usageSaveEvery is how often usage counts are saved.
const usageSaveEvery = 10 * time.Second

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
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.save()
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
