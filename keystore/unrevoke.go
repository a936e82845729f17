package keystore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// A revocation is undone only on purpose: every Store refuses a change
// that turns a revoked record back into a working one unless the change's
// context says so (AllowUnrevoke). An editor that planned a whole record
// from an earlier read (an import) cannot undo a revocation made since,
// by writing back what it read.

// ErrUnrevoke refuses a change that would undo a revocation without
// saying so.
var ErrUnrevoke = errors.New("the key is revoked, and a revocation is undone only explicitly")

type unrevokeKey struct{}

// AllowUnrevoke returns a context whose changes may un-revoke a record.
func AllowUnrevoke(ctx context.Context) context.Context {
	return context.WithValue(ctx, unrevokeKey{}, true)
}

// CheckUnrevoke refuses the change from before to after when it undoes a
// revocation and ctx does not allow it. Stores call it on every update.
func CheckUnrevoke(ctx context.Context, before, after Record) error {
	if before.Revoked && !after.Revoked && ctx.Value(unrevokeKey{}) == nil {
		return fmt.Errorf("key %q: %w", before.ID, ErrUnrevoke)
	}
	return nil
}

// Same reports whether two versions of a record are the same, field for
// field as a store writes them: what an editor that planned from an
// earlier read compares with the record it is about to change.
func Same(a, b Record) bool {
	x, errX := json.Marshal(a)
	y, errY := json.Marshal(b)
	return errX == nil && errY == nil && bytes.Equal(x, y)
}

// Version names a version of a record: the first 16 bytes of the SHA-256
// of its JSON, in hex. A form that shows a record carries it back, so that
// the change it asks for is made only to the version it showed.
func Version(rec Record) string {
	data, _ := json.Marshal(rec)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16])
}
