package rediskeys

import (
	"fmt"
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
