package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/lifecycle"
)

func init() {
	caddy.RegisterModule(MemoryStore{})
}

// DefaultPersistInterval is how often the memory store saves its counters.
const DefaultPersistInterval = 10 * time.Second

// sweepAfter is how long a key may go unseen before its counters are
// dropped: two daily windows.
const sweepAfter = 48 * time.Hour

// memoryPool holds the counters of each counter file, so that they outlive a
// config reload: the new config acquires them before the old one lets go.
var memoryPool = caddy.NewUsagePool()

// MemoryStore keeps counters in Caddy's memory. Every apikey route that uses
// the same file shares one set of counters, kept across config reloads. The
// counters are saved to the file periodically and when Caddy stops, and
// loaded when it starts; a counter file that is corrupt is logged and set
// aside (renamed), and counting starts from zero.
type MemoryStore struct {
	// File the counters are saved to. Default: apikey/counters.json in
	// Caddy's data directory.
	File string `json:"file,omitempty"`
	// PersistInterval is how often counters are saved. Default: 10s.
	PersistInterval caddy.Duration `json:"persist_interval,omitempty"`

	counters *persistedMemory
	poolKey  string
}

// CaddyModule returns the Caddy module information.
func (MemoryStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.apikey.counters.memory",
		New: func() caddy.Module { return new(MemoryStore) },
	}
}

// Provision acquires the shared counters of the file, loading them on first use.
func (s *MemoryStore) Provision(ctx caddy.Context) error {
	path := s.File
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "apikey", "counters.json")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("counters file: %w", err)
	}
	interval := time.Duration(s.PersistInterval)
	if interval == 0 {
		interval = DefaultPersistInterval
	}
	if interval < 0 {
		return errors.New("counters: persist_interval must be positive")
	}
	val, loaded, err := memoryPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		return openPersistedMemory(path, interval), nil
	})
	if err != nil {
		return err
	}
	s.poolKey = path
	s.counters = val.(*persistedMemory)
	// Saving begins when the config runs: caddy validate reads the file
	// and writes nothing.
	if err := lifecycle.WhenRunning(ctx, s.counters.start); err != nil {
		return err
	}
	if loaded && s.counters.interval != interval {
		ctx.Logger().Warn("counters already open with another persist_interval; keeping it",
			zap.String("file", path), zap.Duration("in_use", s.counters.interval), zap.Duration("configured", interval))
	}
	return nil
}

// Cleanup lets go of the counters; the last user saves them and stops the
// saver. It copes with a store whose Provision failed.
func (s *MemoryStore) Cleanup() error {
	if s.poolKey == "" {
		return nil
	}
	_, err := memoryPool.Delete(s.poolKey)
	s.poolKey = ""
	return err
}

// Take spends one request of key's budget if p allows it.
func (s *MemoryStore) Take(ctx context.Context, key string, p Policy) (Result, error) {
	return s.counters.Take(ctx, key, p)
}

// Peek reports where key stands under p without spending anything.
func (s *MemoryStore) Peek(ctx context.Context, key string, p Policy) (Result, error) {
	return s.counters.Peek(ctx, key, p)
}

// PeekLocal is Peek: the memory store is where the counts are.
func (s *MemoryStore) PeekLocal(key string, p Policy) (Result, bool) {
	res, _ := s.counters.Peek(context.Background(), key, p)
	return res, true
}

// Reserve charges n tokens to every budget of p if each has room, or none.
func (s *MemoryStore) Reserve(ctx context.Context, key string, p TokenPolicy, n int64) (TokenResult, error) {
	return s.counters.Reserve(ctx, key, p, n)
}

// Settle replaces reservation r by the tokens used, in the windows still current.
func (s *MemoryStore) Settle(ctx context.Context, key string, p TokenPolicy, r Reservation, used int64) error {
	return s.counters.Settle(ctx, key, p, r, used)
}

// PeekTokens reports where key's token budgets stand under p.
func (s *MemoryStore) PeekTokens(ctx context.Context, key string, p TokenPolicy) (TokenResult, error) {
	return s.counters.PeekTokens(ctx, key, p)
}

// Reset forgets a key's counters and token budgets.
func (s *MemoryStore) Reset(_ context.Context, key string) error {
	s.counters.Reset(key)
	return nil
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	counters memory {
//	    file <path>
//	    persist_interval <duration>
//	}
func (s *MemoryStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("%s given more than once", sub)
		}
		seen[sub] = true
		switch sub {
		case "file":
			if !d.AllArgs(&s.File) {
				return d.ArgErr()
			}
		case "persist_interval":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("persist_interval: %q is not a positive duration", v)
			}
			s.PersistInterval = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized counters memory option %q", sub)
		}
	}
	return nil
}

// persistedMemory is the pooled value: counters and the goroutine that saves
// and sweeps them, started when a config that uses them runs (start).
type persistedMemory struct {
	*Memory
	path     string
	interval time.Duration
	loadErr  error // a corrupt file, set aside at start
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

	startMu sync.Mutex
	started bool
	stopped bool
}

func logger() *zap.Logger {
	// The current default logger: a pooled value outlives the config whose
	// logger it was first given.
	return caddy.Log().Named("http.apikey.counters")
}

func openPersistedMemory(path string, interval time.Duration) *persistedMemory {
	p := &persistedMemory{Memory: NewMemory(nil), path: path, interval: interval,
		stop: make(chan struct{}), done: make(chan struct{})}
	n, err := p.Load(path)
	switch {
	case errors.Is(err, ErrCorrupt):
		p.loadErr = err // set aside when the config runs
	case err != nil:
		logger().Error("counter file could not be read; started counting from zero", zap.String("file", path), zap.Error(err))
	case n > 0:
		logger().Info("loaded counters", zap.String("file", path), zap.Int("keys", n))
	}
	return p
}

// start sets a corrupt file aside and starts saving, once: the first time
// a config that uses the counters runs. Until then nothing is written, so
// that validating a config (which provisions it, and never runs it) leaves
// the file as it is.
func (p *persistedMemory) start() {
	p.startMu.Lock()
	defer p.startMu.Unlock()
	if p.started || p.stopped {
		return
	}
	p.started = true
	if p.loadErr != nil {
		aside, renameErr := atomicfile.SetAside(p.path, time.Now())
		logger().Error("counter file is corrupt; set it aside and started counting from zero",
			zap.String("file", p.path), zap.String("set_aside_as", aside), zap.NamedError("rename_error", renameErr), zap.Error(p.loadErr))
	}
	go p.run()
}

func (p *persistedMemory) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.Sweep(p.now().Add(-sweepAfter))
			err := p.Save(p.path)
			// Log a failure once, and the recovery, not every interval.
			if err != nil && !failing {
				logger().Error("saving counters failed", zap.String("file", p.path), zap.Error(err))
			} else if err == nil && failing {
				logger().Info("saving counters works again", zap.String("file", p.path))
			}
			failing = err != nil
		}
	}
}

// Destruct stops the saver and saves one last time; counters that never
// ran (a config only validated) are dropped, unsaved.
func (p *persistedMemory) Destruct() error {
	p.startMu.Lock()
	started := p.started
	p.stopped = true
	p.startMu.Unlock()
	if !started {
		return nil
	}
	p.once.Do(func() { close(p.stop) })
	<-p.done
	if err := p.Save(p.path); err != nil {
		logger().Error("saving counters at shutdown failed", zap.String("file", p.path), zap.Error(err))
		return err
	}
	return nil
}

// Interface guards
var (
	_ Store                 = (*MemoryStore)(nil)
	_ TokenStore            = (*MemoryStore)(nil)
	_ caddy.Provisioner     = (*MemoryStore)(nil)
	_ caddy.CleanerUpper    = (*MemoryStore)(nil)
	_ caddyfile.Unmarshaler = (*MemoryStore)(nil)
)
