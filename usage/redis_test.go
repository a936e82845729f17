package usage

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
)

// TestClusterSumsInstances: two instances' counts add up in Redis, each
// flush adds only what is new, and a batch sent again after an outage is
// counted once.
func TestClusterSumsInstances(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	a, b := New(), New()
	ca, cb := NewCluster(client, "t:", DefaultRetention), NewCluster(client, "t:", DefaultRetention)
	for range 3 {
		a.Add("k_x", "ollama", "GET", "/api/tags", now)
	}
	b.Add("k_x", "ollama", "GET", "/api/tags", now)
	b.Add("k_y", "n8n", "POST", "/api/v1", now)
	for _, f := range []func() error{func() error { return ca.Flush(ctx, a) }, func() error { return cb.Flush(ctx, b) }, func() error { return ca.Flush(ctx, a) }} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	a.Add("k_x", "ollama", "GET", "/api/tags", now)
	// An outage: the flush fails; once Redis is back, the batch goes once.
	srv.Kill()
	if err := ca.Flush(ctx, a); err == nil {
		t.Fatal("a flush to a dead redis succeeded")
	}
	srv.Restart() // empty: redistest keeps no data; start the sums again
	client.FlushAll(ctx)
	ca, cb = NewCluster(client, "t:", DefaultRetention), NewCluster(client, "t:", DefaultRetention)
	if err := ca.Flush(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := cb.Flush(ctx, b); err != nil {
		t.Fatal(err)
	}
	rows, err := ca.Report(ctx, Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range rows {
		got[r.KeyID+" "+r.Method+" "+r.Endpoint] = r.Requests
	}
	if got["k_x GET /api/tags"] != 5 || got["k_y POST /api/v1"] != 1 || len(got) != 2 {
		t.Errorf("cluster sums %v, want k_x 5 (4 + 1), k_y 1", got)
	}
}

// TestClusterResendsOnce: a batch whose answer was lost is sent again
// with the same id and is not counted twice.
func TestClusterResendsOnce(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	c := New()
	c.Add("k_z", "s", "GET", "/", now)
	cl := NewCluster(client, "t2:", DefaultRetention)
	batch := []delta{{Bucket{KeyID: "k_z", Service: "s", Method: "GET", Endpoint: "/", Hour: now.Unix() / 3600 * 3600}, 1}}
	// The batch reached Redis, and its answer was lost: it stays pending.
	if err := cl.send(ctx, "lost:1", batch); err != nil {
		t.Fatal(err)
	}
	cl.flushed = map[Bucket]int64{}
	cl.pending, cl.pendingID = batch, "lost:1"
	if err := cl.Flush(ctx, c); err != nil {
		t.Fatal(err)
	}
	rows, _ := cl.Report(ctx, Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if len(rows) != 1 || rows[0].Requests != 1 {
		t.Errorf("rows %+v, want one request counted once", rows)
	}
}
