package rediskeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// RecordVersion is the format of the key records this release reads. A
// record says its format in a "version" field beside the record's own; a
// record without one is format 1. This release writes format 1 without the
// field, as v0.1.0 did, so that v0.1.0 (which refuses unknown fields) still
// reads every record it writes: a rolling upgrade, or a rollback, shares
// the records. A release that changes the format writes its "version", and
// this one refuses such a record (see ErrNewerRecord).
const RecordVersion = 1

// ErrNewerRecord is returned, wrapped with the key's id and the record's
// format, for a record written by a newer caddy-apikey. The gateway treats
// it as it treats Redis failing (503 for that key, never 401): it is a
// problem of the store, not of the key.
var ErrNewerRecord = errors.New("written by a newer caddy-apikey")

// storedRecord is a record as stored: its format and the record.
type storedRecord struct {
	Version json.RawMessage `json:"version,omitempty"`
	keystore.Record
}

// decodeRecord reads a stored record; a record of a newer format is
// refused with ErrNewerRecord before anything else is said of it (its
// fields may be ones this release does not know).
func decodeRecord(id string, data []byte) (keystore.Record, error) {
	var s storedRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the record")
	}
	if err != nil {
		var v struct {
			Version json.RawMessage `json:"version"`
		}
		_ = json.Unmarshal(data, &v)
		s.Version = v.Version
	}
	if s.Version != nil {
		var n int64
		if json.Unmarshal(s.Version, &n) != nil || n < 1 {
			return keystore.Record{ID: s.ID}, fmt.Errorf("record %q in redis: \"version\" is %s, not a format version", id, s.Version)
		}
		if n > RecordVersion {
			return keystore.Record{}, fmt.Errorf("%w: record %q in redis is format %d; this caddy-apikey reads key records up to format %d: upgrade caddy-apikey", ErrNewerRecord, id, n, RecordVersion)
		}
	}
	if err != nil {
		// Described as the key file's records are.
		rec, derr := keystore.DecodeRecord(data)
		if derr != nil {
			err = derr
		}
		return rec, fmt.Errorf("record %q in redis: %w", id, err)
	}
	return s.Record, nil
}
