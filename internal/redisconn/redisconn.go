// Package redisconn opens Redis clients from the settings the plugin takes
// (one server, a Cluster, or Sentinel), shared per set of settings so that
// every part of the gateway that names the same Redis uses one pool.
package redisconn

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/caddyserver/caddy/v2"
)

// DefaultTimeout bounds a call when the settings name no timeout.
const DefaultTimeout = 250 * time.Millisecond

// Config is how to reach Redis.
type Config struct {
	// Addresses of the server, host:port. Several mean a Redis Cluster,
	// or, with MasterName, the Sentinels.
	Addresses []string `json:"addresses,omitempty"`
	// MasterName is the Sentinel master's name; with it, Addresses are
	// the Sentinels.
	MasterName string `json:"master_name,omitempty"`
	// Username for Redis ACLs.
	Username string `json:"username,omitempty"`
	// Password; global placeholders such as {env.REDIS_PASSWORD} and
	// {file./run/secrets/redis} are filled when the config loads.
	Password string `json:"password,omitempty"`
	// DB is the database number (not for a Cluster).
	DB int `json:"db,omitempty"`
	// TLS connects with TLS.
	TLS bool `json:"tls,omitempty"`
	// Timeout bounds each call, connecting included.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// literalPassword takes Password as it is, without placeholders: for
	// the commands, which read it from a file or the environment.
	literalPassword bool
}

// WithLiteralPassword returns c with password taken as it is.
func (c Config) WithLiteralPassword(password string) Config {
	c.Password, c.literalPassword = password, true
	return c
}

// Check reports settings that cannot work.
func (c Config) Check() error {
	switch {
	case len(c.Addresses) == 0:
		return errors.New("at least one address is required")
	case c.Timeout < 0:
		return errors.New("timeout must be positive")
	case c.DB != 0 && len(c.Addresses) > 1 && c.MasterName == "":
		return errors.New("db is not available in a Redis Cluster")
	}
	return nil
}

// password fills the password's global placeholders.
func (c Config) password() string {
	if c.literalPassword {
		return c.Password
	}
	return caddy.NewReplacer().ReplaceKnown(c.Password, "")
}

// CallTimeout is the bound on one call: the timeout, or DefaultTimeout.
func (c Config) CallTimeout() time.Duration { return c.timeout() }

func (c Config) timeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return time.Duration(c.Timeout)
}

// Identity names the settings (the password only by a hash of it), for
// sharing one client among everything that names the same Redis. The
// timeout is not part of it: every user bounds its calls with a context
// deadline, which the client honours, so users with different timeouts
// share a pool.
func (c Config) Identity() string {
	sum := sha256.Sum256([]byte(c.password()))
	return fmt.Sprintf("%q|%s|%s|%d|%v|%s", c.Addresses, c.MasterName, c.Username, c.DB, c.TLS, hex.EncodeToString(sum[:8]))
}

// Database names the database the settings reach, whoever connects and
// however: its addresses, Sentinel master and number, in full. Two
// settings with one Database read and write the same keys.
func (c Config) Database() string {
	return fmt.Sprintf("%q|%s|%d", c.Addresses, c.MasterName, c.DB)
}

// Describe names the Redis for messages, listings and audit entries: its
// addresses separated by commas (at most maxDescribed bytes of them), the
// Sentinel master and the database when set; never the password.
func (c Config) Describe() string {
	var b strings.Builder
	b.WriteString("redis ")
	if c.MasterName != "" {
		b.WriteString("sentinel " + c.MasterName + " (" + describeAddrs(c.Addresses) + ")")
	} else {
		b.WriteString(describeAddrs(c.Addresses))
	}
	if c.DB != 0 {
		b.WriteString(" db " + strconv.Itoa(c.DB))
	}
	return b.String()
}

// maxDescribed bounds the addresses in a description.
const maxDescribed = 200

// describeAddrs joins addresses with commas, cut after maxDescribed bytes
// with a count of them all.
func describeAddrs(addrs []string) string {
	s := strings.Join(addrs, ",")
	if len(s) <= maxDescribed {
		return s
	}
	cut := maxDescribed
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (" + strconv.Itoa(len(addrs)) + " addresses)"
}

// socketTimeout is the client's own bound on dialling, reading, writing and
// waiting for a pooled connection: a safety net only. Every user of a
// shared client bounds each call with a context deadline of its own
// timeout (CallTimeout), which the client honours, so users with different
// timeouts can share one pool.
const socketTimeout = 5 * time.Second

// Options are the client options for the settings: no retries (a call
// whose answer was lost may have taken effect) and no cluster redirects
// followed; calls bounded by their contexts.
func (c Config) Options() *redis.UniversalOptions {
	opts := &redis.UniversalOptions{
		Addrs:                 c.Addresses,
		MasterName:            c.MasterName,
		Username:              c.Username,
		Password:              c.password(),
		DB:                    c.DB,
		MaxRetries:            -1,
		MaxRedirects:          -1,
		DialTimeout:           socketTimeout,
		ReadTimeout:           socketTimeout,
		WriteTimeout:          socketTimeout,
		PoolTimeout:           socketTimeout,
		ContextTimeoutEnabled: true,
		PoolSize:              16 * runtime.GOMAXPROCS(0),
		MinIdleConns:          runtime.GOMAXPROCS(0),
	}
	if c.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return opts
}

// pool shares one client per set of settings, across config reloads.
var pool = caddy.NewUsagePool()

type pooled struct{ redis.UniversalClient }

func (p pooled) Destruct() error { return p.Close() }

// Open returns the shared client for c and the function that lets go of
// it (the last one to let go closes it). It does not need Redis to be up.
func Open(c Config) (redis.UniversalClient, func() error, error) {
	if err := c.Check(); err != nil {
		return nil, nil, err
	}
	key := c.Identity()
	val, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooled{redis.NewUniversalClient(c.Options())}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	release := func() error {
		_, err := pool.Delete(key)
		return err
	}
	return val.(pooled).UniversalClient, release, nil
}
