// Package storetest checks that a keystore.Store keeps the contract: every
// implementation runs the same tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// record makes a valid record with a fresh key.
func record(t *testing.T, id, owner string) keystore.Record {
	t.Helper()
	key, err := keystore.Generate(keystore.Dev)
	if err != nil {
		t.Fatal(err)
	}
	return keystore.Record{ID: id, Hash: keystore.Sum(key).Encode(), Type: "dev", Role: "reader",
		Services: []string{"ollama"}, Owner: owner}
}

// Run checks the contract on stores from open, each one new and empty.
func Run(t *testing.T, open func(t *testing.T) keystore.Store) {
	ctx := context.Background()

	t.Run("create get update", func(t *testing.T) {
		s := open(t)
		rec := record(t, "k_one", "alice")
		if err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "k_one")
		if err != nil || got.Hash != rec.Hash || got.Owner != "alice" || got.Role != "reader" {
			t.Fatalf("get: %+v, %v", got, err)
		}
		written, err := s.Update(ctx, "k_one", func(r *keystore.Record) error {
			r.Role = "writer"
			r.Revoked = true
			return nil
		})
		if err != nil || written.Role != "writer" || !written.Revoked {
			t.Fatalf("update: %+v, %v", written, err)
		}
		if got, _ := s.Get(ctx, "k_one"); got.Role != "writer" || !got.Revoked || got.Services[0] != "ollama" {
			t.Fatalf("after update: %+v", got)
		}
	})

	t.Run("a revocation is undone only explicitly", func(t *testing.T) {
		s := open(t)
		rec := record(t, "k_rev", "")
		rec.Revoked = true
		if err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, "k_rev", func(r *keystore.Record) error {
			*r = rec
			r.Revoked, r.Name = false, "renamed"
			return nil
		}); !errors.Is(err, keystore.ErrUnrevoke) {
			t.Fatalf("an update that un-revokes without saying so: %v, want ErrUnrevoke", err)
		}
		if got, _ := s.Get(ctx, "k_rev"); !got.Revoked || got.Name != "" {
			t.Fatalf("after a refused un-revoke: revoked %v, name %q", got.Revoked, got.Name)
		}
		if _, err := s.Update(keystore.AllowUnrevoke(ctx), "k_rev", func(r *keystore.Record) error {
			r.Revoked = false
			return nil
		}); err != nil {
			t.Fatalf("an explicit un-revoke: %v", err)
		}
		if got, _ := s.Get(ctx, "k_rev"); got.Revoked {
			t.Fatal("an explicit un-revoke left the key revoked")
		}
	})

	t.Run("refusals leave the store as it was", func(t *testing.T) {
		s := open(t)
		rec := record(t, "k_one", "")
		if err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, record(t, "k_one", "")); !errors.Is(err, keystore.ErrIDTaken) {
			t.Errorf("same id: %v", err)
		}
		dup := record(t, "k_two", "")
		dup.Hash = rec.Hash
		if err := s.Create(ctx, dup); !errors.Is(err, keystore.ErrHashTaken) {
			t.Errorf("same hash: %v", err)
		}
		bad := record(t, "k_bad", "")
		bad.Role = "superuser"
		if err := s.Create(ctx, bad); err == nil {
			t.Error("an invalid record was created")
		}
		if _, err := s.Update(ctx, "k_none", func(*keystore.Record) error { return nil }); !errors.Is(err, keystore.ErrUnknownID) {
			t.Errorf("unknown id: %v", err)
		}
		if _, err := s.Update(ctx, "k_one", func(r *keystore.Record) error { r.Role = "root"; return nil }); err == nil {
			t.Error("an update to an invalid record was written")
		}
		if _, err := s.Update(ctx, "k_one", func(r *keystore.Record) error { r.Role = "admin"; return errors.New("changed my mind") }); err == nil {
			t.Error("a failed change was reported as written")
		}
		page, err := s.List(ctx, keystore.ListQuery{})
		if err != nil || len(page.Records) != 1 || page.Records[0].Role != "reader" {
			t.Errorf("after refusals: %+v, %v", page.Records, err)
		}
		if _, err := s.Get(ctx, "k_two"); !errors.Is(err, keystore.ErrUnknownID) {
			t.Errorf("get unknown: %v", err)
		}
	})

	t.Run("rotation moves the hash", func(t *testing.T) {
		s := open(t)
		rec := record(t, "k_rot", "")
		if err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		next := record(t, "k_rot", "")
		if _, err := s.Update(ctx, "k_rot", func(r *keystore.Record) error {
			r.PreviousHashes = []keystore.PreviousHash{{Hash: r.Hash, ValidUntil: "2099-01-01T00:00:00Z"}}
			r.Hash = next.Hash
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// The old hash still belongs to k_rot: no other key may take it.
		other := record(t, "k_other", "")
		other.Hash = rec.Hash
		if err := s.Create(ctx, other); !errors.Is(err, keystore.ErrHashTaken) {
			t.Errorf("an old secret's hash was given to another key: %v", err)
		}
	})

	t.Run("a leak is marked once and rotated away", func(t *testing.T) {
		s := open(t)
		for _, id := range []string{"k_leak", "k_notified"} {
			if err := s.Create(ctx, record(t, id, "")); err != nil {
				t.Fatal(err)
			}
		}
		at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
		secretOf := func(id string) keystore.Digest {
			rec, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			d, err := keystore.ParseDigest(rec.Hash)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		leaked := secretOf("k_leak")
		// A secret the key no longer answers to (rotated since the report's
		// lookup) changes nothing.
		unchanged, _ := s.Get(ctx, "k_leak")
		if _, err := keystore.MarkLeaked(ctx, s, "k_leak", keystore.Leak{At: at, Action: keystore.LeakRevoke, Secret: secretOf("k_notified")}); !errors.Is(err, keystore.ErrNotThisSecret) {
			t.Fatalf("a report of another secret: %v, want ErrNotThisSecret", err)
		}
		if got, _ := s.Get(ctx, "k_leak"); !keystore.Same(unchanged, got) {
			t.Fatal("a report of another secret changed the record")
		}
		rec, err := keystore.MarkLeaked(ctx, s, "k_leak", keystore.Leak{At: at, URL: "https://github.com/o/r/blob/x/.env", Source: "commit", Action: keystore.LeakRevoke, Secret: leaked})
		if err != nil || !rec.Revoked || rec.LeakedAt != "2026-12-02T10:00:00Z" || rec.LeakSource != "commit" || rec.LeakAction != "revoke" {
			t.Fatalf("marked: %+v, %v", rec, err)
		}
		if got, _ := s.Get(ctx, "k_leak"); got.LeakURL != "https://github.com/o/r/blob/x/.env" || !got.Revoked {
			t.Fatalf("read back: leak_url %q revoked %v", got.LeakURL, got.Revoked)
		}
		before, _ := s.Get(ctx, "k_leak")
		if _, err := keystore.MarkLeaked(ctx, s, "k_leak", keystore.Leak{At: at.Add(time.Hour), URL: "elsewhere", Action: keystore.LeakPause, Secret: leaked}); !errors.Is(err, keystore.ErrAlreadyLeaked) {
			t.Fatalf("a second report: %v, want ErrAlreadyLeaked", err)
		}
		if after, _ := s.Get(ctx, "k_leak"); !keystore.Same(before, after) {
			t.Fatal("a second report changed the record")
		}
		key, err := keystore.RotateLeaked(ctx, s, "k_leak", nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := s.Get(ctx, "k_leak")
		if got.Revoked || got.LeakedAt != "" || got.LeakAction != "" || len(got.PreviousHashes) != 0 || got.Hash != keystore.Sum(key).Encode() || got.Hash == before.Hash {
			t.Fatalf("after the rotation: revoked %v leaked_at %q, %d old secrets, new hash %v", got.Revoked, got.LeakedAt, len(got.PreviousHashes), got.Hash == keystore.Sum(key).Encode())
		}
		if _, err := keystore.RotateLeaked(ctx, s, "k_leak", nil); err == nil {
			t.Fatal("a key no longer leaked was rotated as leaked")
		}
		// Notified only, then revoked by hand: not brought back.
		if _, err := keystore.MarkLeaked(ctx, s, "k_notified", keystore.Leak{At: at, Action: keystore.LeakNotify, Secret: secretOf("k_notified")}); err != nil {
			t.Fatal(err)
		}
		if err := keystore.Revoke(ctx, s, "k_notified", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := keystore.RotateLeaked(ctx, s, "k_notified", nil); err == nil {
			t.Fatal("a key revoked by hand was brought back by a leak rotation")
		}
		if got, _ := s.Get(ctx, "k_notified"); !got.Revoked {
			t.Fatal("k_notified is no longer revoked")
		}
	})

	t.Run("pages and owners", func(t *testing.T) {
		s := open(t)
		for i := range 25 {
			owner := "alice"
			if i%5 == 0 {
				owner = "bob"
			}
			if err := s.Create(ctx, record(t, fmt.Sprintf("k_%02d", i), owner)); err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		q := keystore.ListQuery{Limit: 10}
		for pages := 1; ; pages++ {
			page, err := s.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Records {
				ids = append(ids, r.ID)
			}
			if page.Next == "" {
				if pages != 3 {
					t.Errorf("%d pages of 10 for 25 records", pages)
				}
				break
			}
			q.After = page.Next
		}
		if len(ids) != 25 || ids[0] != "k_00" || ids[24] != "k_24" {
			t.Errorf("listed %v", ids)
		}
		page, err := s.List(ctx, keystore.ListQuery{Owner: "bob"})
		if err != nil || len(page.Records) != 5 {
			t.Fatalf("bob's keys: %d, %v", len(page.Records), err)
		}
		for _, r := range page.Records {
			if r.Owner != "bob" {
				t.Errorf("bob's page holds %s of %s", r.ID, r.Owner)
			}
		}
	})

	t.Run("team keys", func(t *testing.T) {
		s := open(t)
		team := func(want ...string) {
			t.Helper()
			var got []string
			q := keystore.ListQuery{Team: "ml", Limit: 2}
			for {
				page, err := s.List(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range page.Records {
					if r.Team != "ml" {
						t.Errorf("team ml's page holds %s of team %q", r.ID, r.Team)
					}
					got = append(got, r.ID)
				}
				if page.Next == "" {
					break
				}
				q.After = page.Next
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("team ml's keys: %v, want %v", got, want)
			}
		}
		for i, owner := range []string{"alice", "bob", "alice", "carol"} {
			rec := record(t, fmt.Sprintf("k_%d", i), owner)
			if i < 3 {
				rec.Team = "ml"
			}
			if err := s.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		team("k_0", "k_1", "k_2")
		// The team's keys whoever made them; one owner's keys, whatever
		// their team.
		page, err := s.List(ctx, keystore.ListQuery{Owner: "alice"})
		if err != nil || len(page.Records) != 2 {
			t.Fatalf("alice's keys: %d, %v", len(page.Records), err)
		}
		// A key moved out of the team, and one moved in.
		for id, to := range map[string]string{"k_1": "", "k_3": "ml"} {
			if _, err := s.Update(ctx, id, func(r *keystore.Record) error { r.Team = to; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		team("k_0", "k_2", "k_3")
		bad := record(t, "k_bad", "alice")
		bad.Team = "m l"
		if err := s.Create(ctx, bad); err == nil {
			t.Error("a team named with a space was stored")
		}
	})

	t.Run("keys waiting for approval", func(t *testing.T) {
		s := open(t)
		waiting := func(want ...string) {
			t.Helper()
			page, err := s.List(ctx, keystore.ListQuery{Waiting: true})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range page.Records {
				got = append(got, r.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("waiting: %v, want %v", got, want)
			}
		}
		for i := range 8 {
			rec := record(t, fmt.Sprintf("k_w%d", i), "alice")
			rec.Pending = i%3 == 0 // 0, 3, 6
			rec.Revoked = i == 6   // a refused one waits no more
			if i == 5 {
				rec.PendingGrant = &keystore.Grant{Role: "writer"}
			}
			if err := s.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		waiting("k_w0", "k_w3", "k_w5")
		if _, err := s.Update(ctx, "k_w0", func(r *keystore.Record) error { r.Pending = false; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, "k_w5", func(r *keystore.Record) error { r.Revoked = true; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, "k_w7", func(r *keystore.Record) error {
			r.PendingGrant = &keystore.Grant{Role: "admin"}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		waiting("k_w3", "k_w7")
	})

	t.Run("concurrent changes all land", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Create(ctx, record(t, fmt.Sprintf("k_c%02d", i), ""))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		page, _ := s.List(ctx, keystore.ListQuery{Limit: 100})
		if len(page.Records) != 20 {
			t.Errorf("%d of 20 concurrent creates landed", len(page.Records))
		}
	})
}
