package keystore

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"
)

// The changes every editor of keys (the commands, the admin API, the
// developer portal) makes the same way, through a Store.

// NewID makes a key id such as k_7fq2xk9m3a: 50 random bits, in letters
// and digits that cannot be mistaken for one another.
func NewID() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "k_" + string(b)
}

// Rotate gives the key a new secret, returned once; its old secret works
// until grace from now, and old secrets whose grace is over are dropped. A
// revoked key is not rotated (an error says so, and nothing is written).
// prepare, when not nil, is called with the current record first: it may
// refuse the rotation (e.g. of someone else's key), and nothing is written,
// or change the record further (e.g. extend its expiry).
func Rotate(ctx context.Context, store Store, id string, grace time.Duration, prepare func(*Record) error) (key string, until time.Time, err error) {
	_, err = store.Update(ctx, id, func(rec *Record) error {
		if prepare != nil {
			if err := prepare(rec); err != nil {
				return err
			}
		}
		if rec.Revoked {
			// A new secret for a revoked key would work nowhere, and printing
			// it as if it would misleads.
			return fmt.Errorf("key %q is revoked: a revoked key is not rotated; make a new key", rec.ID)
		}
		typ, err := TypeOf(*rec)
		if err != nil {
			return err
		}
		if key, err = Generate(typ); err != nil {
			return err
		}
		now := time.Now().UTC()
		until = now.Add(grace).Truncate(time.Second)
		previous := []PreviousHash{{Hash: rec.Hash, ValidUntil: until.Format(time.RFC3339)}}
		for _, p := range rec.PreviousHashes {
			if t, err := time.Parse(time.RFC3339, p.ValidUntil); err == nil && now.Before(t) {
				previous = append(previous, p)
			}
		}
		rec.Hash = Sum(key).Encode()
		rec.Hint = HintOf(key)
		rec.PreviousHashes = previous
		return nil
	})
	return key, until, err
}

// TypeOf is a record's type: its own, since its hash cannot tell, so a
// record without one must say it for a rotation to keep the key's prefix.
func TypeOf(rec Record) (Type, error) {
	if rec.Type == "" {
		return 0, fmt.Errorf("key %q has no \"type\" in the file, so its new secret's prefix is unknown; add \"type\": \"dev\" or \"prod\" first", rec.ID)
	}
	return ParseType(rec.Type)
}

// Revoke marks a key revoked. check, when not nil, may refuse it first.
func Revoke(ctx context.Context, store Store, id string, check func(Record) error) error {
	_, err := store.Update(ctx, id, func(rec *Record) error {
		if check != nil {
			if err := check(*rec); err != nil {
				return err
			}
		}
		rec.Revoked = true
		return nil
	})
	return err
}
