package keycache

import (
	"context"
	"testing"

	"github.com/moodmnky/caddy-apikey/keystore"
)

func BenchmarkCacheHit(b *testing.B) {
	k, _ := keystore.Generate(keystore.Dev)
	d := keystore.Sum(k)
	key := &keystore.Key{ID: "k", Digest: d}
	c, err := New(CacheConfig{}, func(context.Context, keystore.Digest) (keystore.Match, error) { return keystore.Match{Key: key}, nil }, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Lookup(context.Background(), d)
	b.ReportAllocs()
	for b.Loop() {
		if m, _ := c.Lookup(context.Background(), d); m.Key == nil {
			b.Fatal("miss")
		}
	}
}
