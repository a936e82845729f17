package keycache

import (
	"context"
	"strconv"
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

// BenchmarkPurge: one purge among many recent ones (a bulk change, each id
// published): O(1), not a copy of every id purged within stale.
func BenchmarkPurge(b *testing.B) {
	c, err := New(CacheConfig{}, func(context.Context, keystore.Digest) (keystore.Match, error) { return keystore.Match{}, nil }, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for i := range 100000 {
		c.Purge("k_" + strconv.Itoa(i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		c.Purge("k_" + strconv.Itoa(i))
	}
}
