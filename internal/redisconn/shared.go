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
	app, err := ctx.AppIfConfigured("apikey")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("%s: no address; give one here, or once for every route in the global option apikey { redis { address … } }", what)
	}
	if err != nil {
		return err
	}
	holder, _ := app.(SharedHolder)
	var shared *Config
	if holder != nil {
		shared = holder.SharedRedis()
	}
	if shared == nil {
		return fmt.Errorf("%s: no address, and the global apikey option has no redis block", what)
	}
	*c = *shared
	return nil
}
