package keystore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A key reported found in a public place (by a secret scanner, see package
// leak) is marked leaked on its record, and stopped as the operator chose:
// revoked, paused, or left working while its owner is told.

// LeakAction is what is done with a key reported leaked.
type LeakAction string

// Leak actions.
const (
	// LeakRevoke revokes the key: 401 revoked_key from the next request.
	LeakRevoke LeakAction = "revoke"
	// LeakPause pauses the key: 403, reason paused, until it is resumed
	// or rotated.
	LeakPause LeakAction = "pause"
	// LeakNotify only marks the key leaked: it keeps working, and its
	// owner sees the leak in the portal and the list.
	LeakNotify LeakAction = "notify"
)

// ParseLeakAction reads revoke, pause or notify.
func ParseLeakAction(s string) (LeakAction, error) {
	switch a := LeakAction(s); a {
	case LeakRevoke, LeakPause, LeakNotify:
		return a, nil
	}
	return "", fmt.Errorf("unknown leak action %q (want revoke, pause or notify)", s)
}

// Leak is one report of a key found in a public place.
type Leak struct {
	// At is when the report came.
	At time.Time
	// URL is where the key was found; Source is where the scanner looked.
	URL, Source string
	// Action is what to do with the key.
	Action LeakAction
	// Secret is the digest of the secret reported. The record must still
	// answer to it when the change is made (its hash, or an old secret
	// within its grace at At), or nothing is written (ErrNotThisSecret):
	// the lookup that found the key may be older than a rotation.
	Secret Digest
}

// ErrNotThisSecret is MarkLeaked's answer when the key no longer answers
// to the reported secret (rotated since it was looked up, with no grace or
// past it): its current secret was not leaked, and nothing is written.
var ErrNotThisSecret = errors.New("the key no longer answers to the reported secret")

// answersTo reports whether rec's secret, or an old one still within its
// grace at now, is d.
func answersTo(rec *Record, d Digest, now time.Time) bool {
	if cur, err := ParseDigest(rec.Hash); err == nil && cur.Equal(d) {
		return true
	}
	for _, ph := range rec.PreviousHashes {
		old, err := ParseDigest(ph.Hash)
		if err != nil || !old.Equal(d) {
			continue
		}
		if until, err := time.Parse(time.RFC3339, ph.ValidUntil); err == nil && now.Before(until) {
			return true
		}
	}
	return false
}

// ErrAlreadyLeaked is MarkLeaked's answer for a key already marked leaked:
// the first report is the one kept, and nothing is written.
var ErrAlreadyLeaked = errors.New("the key is already marked leaked")

// MarkLeaked records the leak on the key id and applies its action, in one
// change, if the record still answers to the secret reported
// (ErrNotThisSecret otherwise). A key already marked leaked is left as it is (ErrAlreadyLeaked):
// the same report twice changes nothing twice. It returns the record as
// written.
func MarkLeaked(ctx context.Context, store Store, id string, l Leak) (Record, error) {
	if _, err := ParseLeakAction(string(l.Action)); err != nil {
		return Record{}, err
	}
	return store.Update(ctx, id, func(rec *Record) error {
		if !answersTo(rec, l.Secret, l.At) {
			return ErrNotThisSecret
		}
		if rec.LeakedAt != "" {
			return ErrAlreadyLeaked
		}
		at := l.At.UTC().Format(time.RFC3339)
		rec.LeakedAt, rec.LeakURL, rec.LeakSource, rec.LeakAction = at, l.URL, l.Source, string(l.Action)
		switch l.Action {
		case LeakRevoke:
			rec.Revoked = true
		case LeakPause:
			if rec.PausedAt == "" {
				rec.PausedAt = at
			}
		}
		return nil
	})
}

// RotateLeaked gives a leaked key a new secret, returned once, and puts it
// back to work: the leaked secret and every old one stop at once (no
// grace: they are public), the revocation or pause the leak caused is
// lifted, and the leak marks are cleared (the audit log keeps them). A key
// not marked leaked, or revoked or paused for another reason (by hand,
// after a leak it was only notified of), is refused and nothing is
// written. prepare is as Rotate's.
func RotateLeaked(ctx context.Context, store Store, id string, prepare func(*Record) error) (key string, err error) {
	_, err = store.Update(AllowUnrevoke(ctx), id, func(rec *Record) error {
		if prepare != nil {
			if err := prepare(rec); err != nil {
				return err
			}
		}
		if rec.LeakedAt == "" {
			return fmt.Errorf("key %q is not marked leaked", rec.ID)
		}
		action := LeakAction(rec.LeakAction)
		if rec.Revoked && action != LeakRevoke {
			return fmt.Errorf("key %q is revoked: a revoked key is not rotated; make a new key", rec.ID)
		}
		if rec.PausedAt != "" && action != LeakPause {
			return fmt.Errorf("key %q is paused: resume it first", rec.ID)
		}
		typ, err := TypeOf(*rec)
		if err != nil {
			return err
		}
		if key, err = Generate(typ); err != nil {
			return err
		}
		rec.Hash = Sum(key).Encode()
		rec.PreviousHashes = nil
		rec.Revoked, rec.PausedAt = false, ""
		rec.LeakedAt, rec.LeakURL, rec.LeakSource, rec.LeakAction = "", "", "", ""
		return nil
	})
	return key, err
}
