package rediskeys

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestCreatedKeysSurviveACrash: with appendonly and appendfsync always,
// a redis-server killed (as a crash would) while keys are being created
// loses none of the keys whose creation the store acknowledged.
func TestCreatedKeysSurviveACrash(t *testing.T) {
	srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always", "--save", "")
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { client.Close() })
	s := NewStore(client, "", "redis "+srv.Addr())
	var made sync.Map // id -> struct{}
	var count atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := "k_aof_" + strconv.Itoa(w) + "_" + strconv.Itoa(i)
				key, err := keystore.Generate(keystore.Dev)
				if err != nil {
					t.Error(err)
					return
				}
				rec := keystore.Record{ID: id, Hash: keystore.Sum(key).Encode(), Type: "dev", Role: "reader"}
				if err := s.Create(context.Background(), rec); err == nil {
					made.Store(id, struct{}{})
					count.Add(1)
				}
			}
		}()
	}
	for count.Load() < 10 {
		time.Sleep(20 * time.Millisecond)
	}
	srv.Kill()
	time.Sleep(200 * time.Millisecond)
	srv.Restart()
	for count.Load() < 20 {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	missing := 0
	made.Range(func(id, _ any) bool {
		if _, err := s.Get(context.Background(), id.(string)); err != nil {
			missing++
			t.Errorf("key %s was acknowledged and is gone after the restart: %v", id, err)
		}
		return true
	})
	t.Logf("%d keys acknowledged across a kill -9 of redis-server, %d missing", count.Load(), missing)
}
