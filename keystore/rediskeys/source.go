package rediskeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
)

func init() {
	caddy.RegisterModule(Source{})
}

// sourcePool shares one client, cache and subscription per set of settings
// among every route that names them, across config reloads.
var sourcePool = caddy.NewUsagePool()

// Source reads keys from Redis, where the commands, the admin API and the
// portal write them (see Store), behind a cache. Every change is published
// on a Redis channel that every instance listens to, and drops the cached
// answers about that key at once: a key revoked or rotated on one instance
// is refused on all of them within moments. When the subscription is lost,
// the cache is dropped whole once it is back, since changes may have been
// missed meanwhile.
//
// While Redis fails, known keys are served from the cache until cache.stale
// after their last good lookup; keys with no usable entry get 503, never
// 401.
type Source struct {
	redisconn.Config
	// KeyPrefix starts every Redis key of the store. Default: "apikey:".
	KeyPrefix string `json:"key_prefix,omitempty"`
	// Cache in front of Redis. Defaults as documented on
	// keycache.CacheConfig.
	Cache *keycache.CacheConfig `json:"cache,omitempty"`

	shared  *sharedSource
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (Source) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.apikey.sources.redis",
		New: func() caddy.Module { return new(Source) },
	}
}

// Provision joins (or starts) the shared client, cache and subscription.
// It does not need Redis to be up.
func (s *Source) Provision(ctx caddy.Context) error {
	if err := redisconn.Shared(ctx, &s.Config, "keys redis"); err != nil {
		return err
	}
	if err := s.Config.Check(); err != nil {
		return fmt.Errorf("keys redis: %w", err)
	}
	if s.KeyPrefix == "" {
		s.KeyPrefix = DefaultKeyPrefix
	}
	var cfg keycache.CacheConfig
	if s.Cache != nil {
		cfg = *s.Cache
	}
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return fmt.Errorf("keys redis: %w", err)
	}
	cacheID, _ := json.Marshal(cfg)
	key := s.Config.Identity() + "|" + s.KeyPrefix + "|" + string(cacheID)
	val, _, err := sourcePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openShared(s.Config, s.KeyPrefix, cfg)
	})
	if err != nil {
		return fmt.Errorf("keys redis: %w", err)
	}
	s.shared, s.poolKey = val.(*sharedSource), key
	return nil
}

// Cleanup lets go of the shared part. It copes with a failed Provision.
func (s *Source) Cleanup() error {
	if s.poolKey == "" {
		return nil
	}
	_, err := sourcePool.Delete(s.poolKey)
	s.poolKey = ""
	return err
}

// Lookup answers from the cache, asking Redis when it must.
func (s *Source) Lookup(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	return s.shared.cache.Lookup(ctx, d)
}

// LookupFor is Lookup on behalf of a client, bounding the lookups it may
// have waiting (see keycache.Cache.LookupFor).
func (s *Source) LookupFor(ctx context.Context, d keystore.Digest, client netip.Prefix) (keystore.Match, error) {
	return s.shared.cache.LookupFor(ctx, d, client)
}

// Store is the store this source reads, for changes.
func (s *Source) Store() keystore.Store { return s.shared.store }

// Changed drops this instance's cached answers about the key id at once;
// other instances hear of the change on the channel.
func (s *Source) Changed(id string) {
	s.shared.cache.Purge(id)
	s.shared.cache.PurgeUnknown()
}

// CacheOf returns the cache in front of Redis, for purges.
func (s *Source) CacheOf() *keycache.Cache { return s.shared.cache }

// UnmarshalCaddyfile sets up the source from Caddyfile tokens. Syntax:
//
//	keys redis {
//	    address <host:port> ...
//	    master_name <name>
//	    username <name>
//	    password <value>
//	    db <n>
//	    tls
//	    key_prefix <prefix>
//	    timeout <duration>
//	}
func (s *Source) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // source name
	if d.NextArg() {
		return d.Errf("keys redis takes its settings in a block, not %q", d.Val())
	}
	// Without a block (or an address), the global apikey { redis { … } }.
	if err := redisconn.UnmarshalBlock(d, &s.Config, map[string]func() error{
		"key_prefix": func() error {
			if !d.AllArgs(&s.KeyPrefix) {
				return d.ArgErr()
			}
			return nil
		},
	}); err != nil {
		return err
	}
	if len(s.Addresses) == 0 && (s.Username != "" || s.Password != "" || s.DB != 0 || s.TLS || s.MasterName != "" || s.Timeout != 0) {
		return d.Err("keys redis needs an address (or none of its settings, to use the global apikey redis)")
	}
	return nil
}

// sharedSource is the pooled part.
type sharedSource struct {
	client  redis.UniversalClient
	release func() error
	store   *Store
	timeout time.Duration // per lookup
	cache   *keycache.Cache

	cancel context.CancelFunc
	done   chan struct{}
	subMu  sync.Mutex
	sub    *redis.PubSub // the current subscription, for Destruct to close

	lastLogged atomic.Int64
	once       sync.Once
}

func openShared(conn redisconn.Config, prefix string, cfg keycache.CacheConfig) (*sharedSource, error) {
	client, release, err := redisconn.Open(conn)
	if err != nil {
		return nil, err
	}
	store := NewStore(client, prefix, conn.Describe())
	store.database = conn.Database()
	sh := &sharedSource{client: client, release: release, store: store,
		timeout: conn.CallTimeout(), done: make(chan struct{})}
	cache, err := keycache.New(cfg, sh.fetch, nil, sh.logFailure)
	if err != nil {
		release()
		return nil, err
	}
	sh.cache = cache
	ctx, cancel := context.WithCancel(context.Background())
	sh.cancel = cancel
	go sh.listen(ctx)
	return sh, nil
}

func logger() *zap.Logger { return caddy.Log().Named("http.apikey.sources.redis") }

// fetch looks one digest up in Redis.
func (sh *sharedSource) fetch(ctx context.Context, d keystore.Digest) (keystore.Match, error) {
	ctx, cancel := context.WithTimeout(ctx, sh.timeout)
	defer cancel()
	rec, found, err := sh.store.lookup(ctx, d)
	if err != nil || !found {
		return keystore.Match{}, err
	}
	k, err := keystore.Compile(rec)
	if err != nil {
		return keystore.Match{}, fmt.Errorf("record %q in redis is invalid: %w", rec.ID, err)
	}
	if m, ok := keystore.MatchFor(k, d); ok {
		return m, nil
	}
	return keystore.Match{}, fmt.Errorf("record %q in redis does not answer to its index", rec.ID)
}

// failureLogInterval is how often failures are logged.
const failureLogInterval = 10 * time.Second

func (sh *sharedSource) logFailure(err error) {
	keystore.ObserveSourceError("redis")
	now := time.Now().UnixNano()
	last := sh.lastLogged.Load()
	if now-last < int64(failureLogInterval) || !sh.lastLogged.CompareAndSwap(last, now) {
		return
	}
	logger().Error("redis key lookup failed; keys with no usable cache entry get 503", zap.Error(err))
}

// resubscribeDelay is how long the listener waits before subscribing again
// after the subscription broke.
const resubscribeDelay = 250 * time.Millisecond

// listen applies every published change to the cache: the changed key's
// answers are dropped, and so are all "unknown key" answers (the change may
// have added a key). After a subscription broke, the cache is dropped whole
// once it is back, since changes may have been missed.
func (sh *sharedSource) listen(ctx context.Context) {
	defer close(sh.done)
	first := true
	for ctx.Err() == nil {
		sub := sh.client.Subscribe(ctx, sh.store.Channel())
		sh.subMu.Lock()
		sh.sub = sub
		sh.subMu.Unlock()
		if ctx.Err() != nil { // Destruct came between: it closed nothing
			sub.Close()
			return
		}
		if _, err := sub.Receive(ctx); err != nil {
			sub.Close()
			select {
			case <-ctx.Done():
			case <-time.After(resubscribeDelay):
			}
			continue
		}
		if !first {
			sh.cache.PurgeAll()
			logger().Info("subscribed to key changes again; the key cache was dropped, as changes may have been missed")
		}
		first = false
		sh.follow(ctx, sub)
		sub.Close()
	}
}

// pingEvery is how long a quiet subscription waits before it asks Redis
// for a pong; a subscription that misses one is taken as lost, so a Redis
// that died without closing the connection is noticed.
const pingEvery = 2 * time.Second

// follow applies messages until the subscription breaks.
func (sh *sharedSource) follow(ctx context.Context, sub *redis.PubSub) {
	pinged := false
	for ctx.Err() == nil {
		msg, err := sub.ReceiveTimeout(ctx, pingEvery)
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() && !pinged {
			pinged = true
			if err := sub.Ping(ctx); err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				logger().Warn("lost the subscription to key changes; subscribing again", zap.Error(err))
			}
			return
		}
		pinged = false
		if m, ok := msg.(*redis.Message); ok {
			sh.cache.Purge(m.Payload)
			sh.cache.PurgeUnknown()
		}
	}
}

// Destruct stops listening and lets go of the client.
func (sh *sharedSource) Destruct() error {
	var err error
	sh.once.Do(func() {
		sh.cancel()
		// A subscription waiting for a message does not watch the
		// context; closing it ends the wait at once.
		sh.subMu.Lock()
		if sh.sub != nil {
			sh.sub.Close()
		}
		sh.subMu.Unlock()
		<-sh.done
		sh.cache.Close()
		err = sh.release()
	})
	return err
}

// Interface guards
var (
	_ keystore.ClientLookup = (*Source)(nil)
	_ keystore.Editable     = (*Source)(nil)
	_ caddy.Provisioner     = (*Source)(nil)
	_ caddy.CleanerUpper    = (*Source)(nil)
	_ caddyfile.Unmarshaler = (*Source)(nil)
)
