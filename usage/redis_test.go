package usage

import (
	"context"
	"fmt"
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
	batch := []delta{{Bucket{KeyID: "k_z", Service: "s", Method: "GET", Endpoint: "/", Hour: now.Unix() / 3600 * 3600}, Tally{Requests: 1}}}
	// The batch reached Redis, and its answer was lost: it stays pending.
	if err := cl.send(ctx, "lost:1", batch); err != nil {
		t.Fatal(err)
	}
	cl.flushed = map[Bucket]Tally{}
	cl.pending, cl.pendingID = batch, "lost:1"
	if err := cl.Flush(ctx, c); err != nil {
		t.Fatal(err)
	}
	rows, _ := cl.Report(ctx, Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if len(rows) != 1 || rows[0].Requests != 1 {
		t.Errorf("rows %+v, want one request counted once", rows)
	}
}

// TestClusterTokens: tokens go up with the requests, in the same batches:
// each flush adds only what is new, a batch sent again after its answer
// was lost is counted once, tokens alone make a counter, and the sums of
// every instance come back; requests a version without tokens added still
// read, and fields of a kind not known are not counted.
func TestClusterTokens(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	hour := now.Unix() / 3600 * 3600
	a, b := New(), New()
	ca, cb := NewCluster(client, "t3:", DefaultRetention), NewCluster(client, "t3:", DefaultRetention)
	a.Add("k_x", "ollama", "POST", "/api/chat", now)
	a.AddTokens("k_x", "ollama", "POST", "/api/chat", now, 100, 40)
	if err := ca.Flush(ctx, a); err != nil {
		t.Fatal(err)
	}
	// Tokens alone, after the request went up: the next flush adds them.
	a.AddTokens("k_x", "ollama", "POST", "/api/chat", now, 10, 0)
	a.AddTokens("k_y", "openai", "POST", "/v1/chat", now, 0, 5)
	// The batch reaches Redis, and its answer is lost: it stays pending,
	// and is sent again, once applied.
	var lost []delta
	a.Each(func(bk Bucket, n Tally) {
		f := ca.flushed[bk]
		d := Tally{Requests: n.Requests - f.Requests, PromptTokens: n.PromptTokens - f.PromptTokens, CompletionTokens: n.CompletionTokens - f.CompletionTokens}
		if d != (Tally{}) {
			lost = append(lost, delta{bk, d})
		}
	})
	saved := ca.flushed
	ca.flushed = map[Bucket]Tally{}
	if err := ca.send(ctx, "lost:t3", lost); err != nil {
		t.Fatal(err)
	}
	ca.flushed = saved
	ca.pending, ca.pendingID = lost, "lost:t3"
	for range 2 {
		if err := ca.Flush(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	b.Add("k_x", "ollama", "POST", "/api/chat", now)
	b.AddTokens("k_x", "ollama", "POST", "/api/chat", now, 1, 2)
	if err := cb.Flush(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Requests added by the version before, and a field of a kind to come.
	old := Bucket{KeyID: "k_old", Service: "n8n", Method: "GET", Endpoint: "/api/v1"}
	client.HSet(ctx, ca.hourKey(hour), encodeCounter(old), 7, encodeCounter(old)+"x", 99)

	rows, err := cb.Report(ctx, Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Tally{}
	for _, r := range rows {
		got[r.KeyID+" "+r.Method+" "+r.Endpoint] = r.tally()
	}
	want := map[string]Tally{
		"k_x POST /api/chat": {Requests: 2, PromptTokens: 111, CompletionTokens: 42},
		"k_y POST /v1/chat":  {CompletionTokens: 5},
		"k_old GET /api/v1":  {Requests: 7},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cluster sums %v, want %v", got, want)
	}
}
