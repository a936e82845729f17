package rediskeys

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/storetest"
)

func TestStoreContract(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	n := 0
	storetest.Run(t, func(t *testing.T) keystore.Store {
		n++ // a prefix per test: each store starts empty
		return NewStore(client, fmt.Sprintf("t%d:", n), "redis "+srv.Addr())
	})
}

// TestStoreContractOnACluster runs the contract on a real three-node Redis
// Cluster: every script touches one slot (the {keys} hash tag).
func TestStoreContractOnACluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
	t.Cleanup(func() { client.Close() })
	n := 0
	storetest.Run(t, func(t *testing.T) keystore.Store {
		n++
		return NewStore(client, fmt.Sprintf("c%d:", n), "redis cluster")
	})
}

// TestDamagedRecordsAreNeverTrusted: a record edited by hand so that its
// id is not the one it is stored under, or that does not parse, or a hash
// index naming a missing record, makes lookups fail (503 upstream, never a
// key admitted under another name), and listings skip it.
func TestDamagedRecordsAreNeverTrusted(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	s := NewStore(client, "", "redis")
	keys := map[string]string{}
	for _, id := range []string{"k_a", "k_b", "k_c"} {
		key, _ := keystore.Generate(keystore.Dev)
		keys[id] = key
		if err := s.Create(ctx, keystore.Record{ID: id, Hash: keystore.Sum(key).Encode(), Role: "reader"}); err != nil {
			t.Fatal(err)
		}
	}
	p := layout(DefaultKeyPrefix)
	a, _ := client.Get(ctx, p+"rec:k_a").Result()
	client.Set(ctx, p+"rec:k_a", strings.Replace(a, `"id":"k_a"`, `"id":"k_b"`, 1), 0)
	client.Set(ctx, p+"rec:k_b", "not json", 0)
	client.Del(ctx, p+"rec:k_c")
	for id, key := range keys {
		if rec, found, err := s.lookup(ctx, keystore.Sum(key)); err == nil {
			t.Errorf("key %s: found %v as %q, want an error", id, found, rec.ID)
		}
	}
	page, err := s.List(ctx, keystore.ListQuery{})
	if err != nil || len(page.Records) != 0 {
		t.Errorf("listing damaged records: %d records, %v", len(page.Records), err)
	}
	if _, err := s.Update(ctx, "k_a", func(r *keystore.Record) error { r.Revoked = true; return nil }); err == nil {
		t.Error("an update of a damaged record went through")
	}
}
