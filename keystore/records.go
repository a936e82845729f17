package keystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseAndValidate parses a key file's content and checks every record.
func ParseAndValidate(data []byte) (*Set, error) {
	records, err := ParseRecords(data)
	if err != nil {
		return nil, err
	}
	return NewSet(records)
}

// ParseRecords decodes a key file's JSON. Unknown fields are errors, so that
// a misspelt "revoked" cannot leave a key working.
func ParseRecords(data []byte) ([]Record, error) {
	// One strict pass over the whole file; only when it fails does a
	// second, record by record, find which record and field to name.
	var fast struct {
		Version json.RawMessage `json:"version"`
		Keys    []Record        `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fast); err == nil && !dec.More() && fast.Keys != nil {
		if err := checkFileVersion(fast.Version); err != nil {
			return nil, err
		}
		return fast.Keys, nil
	}
	return parseRecordsSlowly(data)
}

// FileVersion is the version of the key file's format that this release
// writes and the newest it reads: {"version": 1, "keys": [...]}. A file
// without "version" is version 1 (the files written before it was added).
const FileVersion = 1

// checkFileVersion checks a key file's "version" (nil when absent). A newer
// version is refused, never read as if it were this one: its records may
// mean something this release does not know.
func checkFileVersion(raw json.RawMessage) error {
	if raw == nil {
		return nil
	}
	v, err := strconv.Atoi(string(raw))
	switch {
	case err != nil || v < 1:
		return fmt.Errorf(`"version" must be a whole number from 1, not %s`, raw)
	case v > FileVersion:
		return fmt.Errorf(`"version" is %d: the file was written by a newer caddy-apikey, and this one reads key files up to version %d; upgrade caddy-apikey, or restore a key file this release wrote (caddy apikey export)`, v, FileVersion)
	}
	return nil
}

// parseRecordsSlowly decodes record by record, for errors that name them.
func parseRecordsSlowly(data []byte) ([]Record, error) {
	var doc struct {
		Version json.RawMessage   `json:"version"`
		Keys    []json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, describeJSONError(data, err)
	}
	if dec.More() {
		return nil, errors.New("unexpected data after the top-level object")
	}
	if err := checkFileVersion(doc.Version); err != nil {
		return nil, err
	}
	if doc.Keys == nil {
		return nil, errors.New(`no "keys" array: want {"keys": [ ... ]}`)
	}
	records := make([]Record, len(doc.Keys))
	for i, raw := range doc.Keys {
		rec, err := DecodeRecord(raw)
		if err != nil {
			return nil, &RecordError{Index: i, ID: rec.ID, Err: err}
		}
		records[i] = rec
	}
	return records, nil
}

// DecodeRecord decodes one key record strictly: unknown fields and wrong
// types are errors that name the field. On error the record's id is kept
// when it could be read, for the message.
func DecodeRecord(raw []byte) (Record, error) {
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		var idOnly struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &idOnly)
		return Record{ID: idOnly.ID}, describeRecordError(err)
	}
	if dec.More() {
		return Record{ID: rec.ID}, errors.New("unexpected data after the record")
	}
	return rec, nil
}

func describeJSONError(data []byte, err error) error {
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		line, col := position(data, syntax.Offset)
		return fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, syntax)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		if typ.Field == "" {
			return fmt.Errorf(`the file must hold one JSON object, {"keys": [ ... ]}, not %s`, typ.Value)
		}
		return fmt.Errorf("%q must be an array of key records, not %s", typ.Field, typ.Value)
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf(`unknown top-level field %s: want {"keys": [ ... ]}`, field)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("the file is empty")
	}
	return fmt.Errorf("invalid JSON: %v", err)
}

func describeRecordError(err error) error {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return &FieldError{Field: typ.Field, Err: fmt.Errorf("must be %s, not %s", jsonKind(typ.Type.String()), typ.Value)}
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &FieldError{Field: strings.Trim(field, `"`), Err: errors.New("unknown field")}
	}
	return err
}

func jsonKind(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "an object"
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}
