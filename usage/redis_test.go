package usage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
)

// instance is one gateway's counts, its outbox and its usage file.
type instance struct {
	c    *Counts
	o    *Outbox
	path string
}

func newInstance(t *testing.T) *instance {
	return &instance{c: New(), o: NewOutbox(), path: filepath.Join(t.TempDir(), "usage.json")}
}

// flush is what the tracker does every 10 seconds: take what is new, save
// it, send what the file records.
func (in *instance) flush(ctx context.Context, cl *Cluster) error {
	in.o.Take(in.c, cl != nil, time.Time{})
	if err := in.o.Save(in.path); err != nil {
		return err
	}
	if cl == nil {
		return nil
	}
	_, err := in.o.Send(ctx, cl)
	return err
}

// restart is the instance started again on its file.
func (in *instance) restart(t *testing.T, now time.Time) *instance {
	t.Helper()
	next := &instance{c: New(), o: NewOutbox(), path: in.path}
	if err := next.o.Load(next.c, in.path, now); err != nil {
		t.Fatal(err)
	}
	return next
}

func clusterSums(t *testing.T, cl *Cluster, now time.Time) map[string]Tally {
	t.Helper()
	rows, err := cl.Report(context.Background(), Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Tally{}
	for _, r := range rows {
		got[r.KeyID+" "+r.Method+" "+r.Endpoint] = r.tally()
	}
	return got
}

// TestClusterSumsInstances: two instances' counts add up in Redis, each
// flush adds only what is new, and what could not go while Redis was down
// goes once it is back, once.
func TestClusterSumsInstances(t *testing.T) {
	srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always")
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	a, b := newInstance(t), newInstance(t)
	cl := NewCluster(client, "t:", DefaultRetention)
	for range 3 {
		a.c.Add("k_x", "ollama", "GET", "/api/tags", now)
	}
	b.c.Add("k_x", "ollama", "GET", "/api/tags", now)
	b.c.Add("k_y", "n8n", "POST", "/api/v1", now)
	for _, in := range []*instance{a, b, a} {
		if err := in.flush(ctx, cl); err != nil {
			t.Fatal(err)
		}
	}
	a.c.Add("k_x", "ollama", "GET", "/api/tags", now)
	srv.Kill()
	if err := a.flush(ctx, cl); err == nil {
		t.Fatal("a flush to a dead redis succeeded")
	}
	a.c.Add("k_x", "ollama", "GET", "/api/tags", now)
	if err := a.flush(ctx, cl); err == nil {
		t.Fatal("a flush to a dead redis succeeded")
	}
	srv.Restart()
	for range 2 { // the batch out first, then what came after
		if err := a.flush(ctx, cl); err != nil {
			t.Fatal(err)
		}
	}
	got := clusterSums(t, cl, now)
	if fmt.Sprint(got) != fmt.Sprint(map[string]Tally{"k_x GET /api/tags": {Requests: 6}, "k_y POST /api/v1": {Requests: 1}}) {
		t.Errorf("cluster sums %v, want k_x 6 (5 + 1), k_y 1", got)
	}
	if a.o.Waiting() {
		t.Error("something still waits for redis")
	}
}

// TestOutboxSurvivesRestarts: what an instance counted while Redis was
// down, and then stopped, goes to Redis from its file once it starts
// again, once; a batch Redis applied whose answer was lost (or that the
// file still records after a crash) is sent again and counted once; and
// what was counted while the counts went to no Redis is not sent later.
func TestOutboxSurvivesRestarts(t *testing.T) {
	srv := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always")
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	cl := NewCluster(client, "t4:", DefaultRetention)
	in := newInstance(t)
	for range 50 {
		in.c.Add("k_a", "s", "GET", "/", now)
	}
	if err := in.flush(ctx, cl); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	for range 80 {
		in.c.Add("k_a", "s", "GET", "/", now)
	}
	in.c.AddTokens("k_a", "s", "GET", "/", now, 7, 3)
	if err := in.flush(ctx, cl); err == nil {
		t.Fatal("a flush to a dead redis succeeded")
	}
	in.c.Add("k_a", "s", "GET", "/", now) // counted after the batch was made
	in.o.Take(in.c, true, time.Time{})
	if err := in.o.Save(in.path); err != nil { // a clean stop saves last
		t.Fatal(err)
	}
	srv.Restart()

	in = in.restart(t, now)
	if !in.o.Waiting() {
		t.Fatal("the file records nothing pending for redis")
	}
	for range 2 { // the batch out first, then what came after
		if err := in.flush(ctx, cl); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]Tally{"k_a GET /": {Requests: 131, PromptTokens: 7, CompletionTokens: 3}}
	if got := clusterSums(t, cl, now); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restart: %v, want %v", got, want)
	}

	// A batch saved, applied, and the instance killed before it knew: the
	// file still records it, and it goes again, once.
	in.c.Add("k_a", "s", "GET", "/", now)
	in.o.Take(in.c, true, time.Time{})
	if err := in.o.Save(in.path); err != nil {
		t.Fatal(err)
	}
	if _, err := in.o.Send(ctx, cl); err != nil {
		t.Fatal(err)
	}
	in = in.restart(t, now)
	for range 2 {
		if err := in.flush(ctx, cl); err != nil {
			t.Fatal(err)
		}
	}
	want["k_a GET /"] = Tally{Requests: 132, PromptTokens: 7, CompletionTokens: 3}
	if got := clusterSums(t, cl, now); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("a batch sent again: %v, want %v", got, want)
	}
	if data, _ := os.ReadFile(in.path); strings.Contains(string(data), `"redis"`) {
		t.Errorf("the file still records something pending: %s", data)
	}

	// Counted while the counts go to no Redis: never sent.
	in.c.Add("k_a", "s", "GET", "/", now)
	if err := in.flush(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := in.flush(ctx, cl); err != nil {
		t.Fatal(err)
	}
	if got := clusterSums(t, cl, now); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counts from no redis went up: %v, want %v", got, want)
	}
}

// TestOutboxReport: the counts Redis does not hold yet, for a report to
// add to the cluster's sums: counted since the last take, in no batch, in
// a batch not saved; not a batch sent whose answer did not come.
func TestOutboxReport(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	q := Query{From: now.Add(-time.Hour), To: now.Add(time.Hour)}
	in := newInstance(t)
	total := func() int64 {
		var n int64
		for _, r := range in.o.Report(in.c, q) {
			n += r.Requests
		}
		return n
	}
	in.c.Add("k_a", "s", "GET", "/", now)
	if n := total(); n != 1 {
		t.Errorf("counted since the last take: %d, want 1", n)
	}
	in.o.Take(in.c, true, time.Time{}) // in a batch, not saved
	in.c.Add("k_a", "s", "GET", "/", now)
	if n := total(); n != 2 {
		t.Errorf("a batch not saved and one more: %d, want 2", n)
	}
	if err := in.o.Save(in.path); err != nil {
		t.Fatal(err)
	}
	if n := total(); n != 1 {
		t.Errorf("with the batch saved (it may be in redis): %d, want 1", n)
	}
	in.o.Take(in.c, true, time.Time{}) // a batch is out: in none yet
	if n := total(); n != 1 {
		t.Errorf("in no batch yet: %d, want 1", n)
	}
}

// TestClusterTokens: tokens go up with the requests, in the same batches:
// each flush adds only what is new, tokens alone make a counter, and the
// sums of every instance come back; requests a version without tokens
// added still read, and fields of a kind not known are not counted.
func TestClusterTokens(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	hour := now.Unix() / 3600 * 3600
	a, b := newInstance(t), newInstance(t)
	cl := NewCluster(client, "t3:", DefaultRetention)
	a.c.Add("k_x", "ollama", "POST", "/api/chat", now)
	a.c.AddTokens("k_x", "ollama", "POST", "/api/chat", now, 100, 40)
	if err := a.flush(ctx, cl); err != nil {
		t.Fatal(err)
	}
	// Tokens alone, after the request went up: the next flush adds them.
	a.c.AddTokens("k_x", "ollama", "POST", "/api/chat", now, 10, 0)
	a.c.AddTokens("k_y", "openai", "POST", "/v1/chat", now, 0, 5)
	for range 2 {
		if err := a.flush(ctx, cl); err != nil {
			t.Fatal(err)
		}
	}
	b.c.Add("k_x", "ollama", "POST", "/api/chat", now)
	b.c.AddTokens("k_x", "ollama", "POST", "/api/chat", now, 1, 2)
	if err := b.flush(ctx, cl); err != nil {
		t.Fatal(err)
	}
	// Requests added by the version before, and a field of a kind to come.
	old := Bucket{KeyID: "k_old", Service: "n8n", Method: "GET", Endpoint: "/api/v1"}
	client.HSet(ctx, cl.hourKey(hour), encodeCounter(old), 7, encodeCounter(old)+"x", 99)

	want := map[string]Tally{
		"k_x POST /api/chat": {Requests: 2, PromptTokens: 111, CompletionTokens: 42},
		"k_y POST /v1/chat":  {CompletionTokens: 5},
		"k_old GET /api/v1":  {Requests: 7},
	}
	if got := clusterSums(t, cl, now); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cluster sums %v, want %v", got, want)
	}
}
