package redisconn

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
)

// SharedHolder is the apikey app (package app), as seen from here: it
// holds the Redis the global apikey option names.
type SharedHolder interface {
	// SharedRedis is the global option's Redis, or nil.
	SharedRedis() *Config
}

// Shared fills c from the global apikey option when c names no address.
// what names the setting for the error when there is neither.
func Shared(ctx caddy.Context, c *Config, what string) error {
	if len(c.Addresses) > 0 {
		return nil
	}
	// The app is in every config with an apikey route, given in the
	// global options or not: it is its Redis that tells.
	app, err := ctx.AppIfConfigured("apikey")
	if err != nil && !errors.Is(err, caddy.ErrNotConfigured) {
		return err
	}
	var shared *Config
	if holder, ok := app.(SharedHolder); ok {
		shared = holder.SharedRedis()
	}
	if shared == nil {
		return fmt.Errorf("%s: no address; give one here, or once for every route in the global option apikey { redis { address … } }", what)
	}
	*c = *shared
	return nil
}
