package rediskeys

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestRecordFormats: records are written as v0.1.0 wrote them (no
// "version": format 1), and read with or without a "version" of 1; a
// record of a newer format is refused by every read, with an error naming
// the key and the format (never the hash), that is not "unknown key"; an
// update leaves it as it is.
func TestRecordFormats(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := context.Background()
	s := NewStore(client, "", "redis")
	p := layout(DefaultKeyPrefix)
	keys := map[string]string{}
	for _, id := range []string{"k_old", "k_one", "k_new"} {
		key, _ := keystore.Generate(keystore.Dev)
		keys[id] = key
		if err := s.Create(ctx, keystore.Record{ID: id, Hash: keystore.Sum(key).Encode(), Role: "reader"}); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := client.Get(ctx, p+"rec:k_old").Result()
	if strings.Contains(raw, "version") {
		t.Errorf("a record of format 1 written with a version, which v0.1.0 does not read: %s", raw)
	}
	one, _ := client.Get(ctx, p+"rec:k_one").Result()
	client.Set(ctx, p+"rec:k_one", `{"version":1,`+one[1:], 0)
	newer, _ := client.Get(ctx, p+"rec:k_new").Result()
	newer = `{"version":2,"scopes":["chat"],` + newer[1:]
	client.Set(ctx, p+"rec:k_new", newer, 0)

	for _, id := range []string{"k_old", "k_one"} {
		if rec, found, err := s.lookup(ctx, keystore.Sum(keys[id])); err != nil || !found || rec.ID != id {
			t.Errorf("%s: found %v as %q, %v", id, found, rec.ID, err)
		}
	}
	if _, err := s.Update(ctx, "k_one", func(r *keystore.Record) error { r.Owner = "alice"; return nil }); err != nil {
		t.Errorf("updating a record with version 1: %v", err)
	}
	if rec, err := s.Get(ctx, "k_one"); err != nil || rec.Owner != "alice" || rec.Role != "reader" {
		t.Errorf("after the update: %+v, %v", rec, err)
	}

	want := `record "k_new" in redis is format 2; this caddy-apikey reads key records up to format 1: upgrade caddy-apikey`
	hash := keystore.Sum(keys["k_new"])
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrNewerRecord) || !strings.Contains(err.Error(), want) || errors.Is(err, keystore.ErrUnknownID) {
			t.Errorf("%s: %v, want %q", what, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), hash.Hex()) || strings.Contains(err.Error(), hash.Encode())) {
			t.Errorf("%s: the error names the key's hash", what)
		}
	}
	_, found, err := s.lookup(ctx, hash)
	refused("lookup", err)
	if found {
		t.Error("lookup: a record of format 2 found")
	}
	_, err = s.Get(ctx, "k_new")
	refused("get", err)
	_, err = s.Update(ctx, "k_new", func(r *keystore.Record) error { r.Revoked = true; return nil })
	refused("update", err)
	if after, _ := client.Get(ctx, p+"rec:k_new").Result(); after != newer {
		t.Errorf("the update changed a record of format 2: %s", after)
	}

	for _, bad := range []string{`"2"`, `0`} {
		client.Set(ctx, p+"rec:k_new", `{"version":`+bad+`,`+newer[len(`{"version":2,"scopes":["chat"],`):], 0)
		if _, _, err := s.lookup(ctx, hash); err == nil || errors.Is(err, ErrNewerRecord) {
			t.Errorf("version %s: %v", bad, err)
		}
	}
}
