package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/redisconn"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
	"github.com/moodmnky/caddy-apikey/keystore/rediskeys"
)

// redisPasswordEnv is where the commands read a Redis password from, when
// --redis-password-file names none: never from the command line, where
// process lists and shell history keep it.
const redisPasswordEnv = "APIKEY_REDIS_PASSWORD"

// addStoreFlags adds the flags that choose the store a command changes:
// the key file (--keys) or Redis (--redis and its settings).
func addStoreFlags(c *cobra.Command) {
	f := c.Flags()
	f.String("keys", "", "the key file")
	f.String("redis", "", "Redis address(es), host:port[,host:port...], instead of --keys")
	f.String("redis-prefix", rediskeys.DefaultKeyPrefix, "the key_prefix of the gateway's keys redis")
	f.String("redis-username", "", "Redis ACL user")
	f.String("redis-password-file", "", "a file holding the Redis password (default: $"+redisPasswordEnv+")")
	f.Int("redis-db", 0, "Redis database number")
	f.Bool("redis-tls", false, "connect to Redis with TLS")
	f.String("redis-master-name", "", "Sentinel master name; --redis then names the Sentinels")
	f.Duration("redis-timeout", 5*time.Second, "per Redis call")
}

// openStore opens the store the flags name. Exactly one of --keys and
// --redis must be given.
func openStore(c *cobra.Command) (keystore.Store, func(), error) {
	f := c.Flags()
	path, _ := f.GetString("keys")
	addrs, _ := f.GetString("redis")
	switch {
	case path != "" && addrs != "":
		return nil, nil, errors.New("give --keys or --redis, not both")
	case path != "":
		return keyfile.NewStore(path), func() {}, nil
	case addrs == "":
		return nil, nil, errors.New("give --keys <file> or --redis <address>")
	}
	cfg := redisconn.Config{Addresses: strings.Split(addrs, ",")}
	cfg.Username, _ = f.GetString("redis-username")
	cfg.DB, _ = f.GetInt("redis-db")
	cfg.TLS, _ = f.GetBool("redis-tls")
	cfg.MasterName, _ = f.GetString("redis-master-name")
	timeout, _ := f.GetDuration("redis-timeout")
	cfg.Timeout = caddy.Duration(timeout)
	password := os.Getenv(redisPasswordEnv)
	if file, _ := f.GetString("redis-password-file"); file != "" {
		data, err := capped.ReadFile("Redis password file", file, capped.Secret)
		if err != nil {
			return nil, nil, fmt.Errorf("--redis-password-file: %w", err)
		}
		password = strings.TrimRight(string(data), "\r\n")
	}
	cfg = cfg.WithLiteralPassword(password)
	client, release, err := redisconn.Open(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		release()
		return nil, nil, fmt.Errorf("%s does not answer: %w", cfg.Describe(), err)
	}
	prefix, _ := f.GetString("redis-prefix")
	return rediskeys.NewStore(client, prefix, cfg.Describe()), func() { release() }, nil
}

// withStore runs fn with the store the flags name (see openStore), and
// closes the store after it.
func withStore(c *cobra.Command, fn func(keystore.Store) error) error {
	if path, _ := c.Flags().GetString("audit-log"); path != "" {
		// A change the audit log cannot record is not made.
		if err := audit.CheckFormat(path); err != nil {
			return fmt.Errorf("%w; nothing was changed", err)
		}
	}
	store, closeStore, err := openStore(c)
	if err != nil {
		return err
	}
	defer closeStore()
	return fn(store)
}

// eachRecord calls fn for every record of the store (of one owner, when
// given), in id order, a page at a time.
func eachRecord(ctx context.Context, store keystore.Store, owner string, fn func(keystore.Record) error) error {
	q := keystore.ListQuery{Owner: owner, Limit: keystore.MaxListLimit}
	for {
		page, err := store.List(ctx, q)
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			if err := fn(rec); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		q.After = page.Next
	}
}
