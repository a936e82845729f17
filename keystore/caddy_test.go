package keystore

import (
	"context"

	"github.com/caddyserver/caddy/v2"
)

func caddyContext() caddy.Context {
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	return ctx
}
