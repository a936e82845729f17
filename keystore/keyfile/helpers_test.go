package keyfile

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/keystore"
)

func hashOf(t *testing.T, typ keystore.Type) (key, hash string) {
	t.Helper()
	k, err := keystore.Generate(typ)
	if err != nil {
		t.Fatal(err)
	}
	return k, keystore.Sum(k).Encode()
}

func caddyContext() caddy.Context {
	ctx, _ := caddy.NewContext(caddy.Context{Context: context.Background()})
	return ctx
}
