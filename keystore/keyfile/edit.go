package keyfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// KeyFile is a key file opened for a change: its records as ordered fields,
// so that a change keeps every record and field it does not touch, in order.
type KeyFile struct {
	top     []field // top-level fields, "keys" among them
	Records []*RecordFields
}

// RecordFields is one record as its fields, in file order.
type RecordFields struct {
	fields []field
}

type field struct {
	name  string
	value json.RawMessage
}

// EditKeyFile applies change to the key file at path under an exclusive
// lock, so that two writers at the same moment both get their change in.
// A missing file starts empty and is created with mode 0600. The file must
// be valid before and after the change; otherwise nothing is written. The
// write is atomic (a temporary file in the same folder, synced, renamed over
// the old one) and keeps the file's mode.
//
// A path that is a symbolic link is followed: the lock, the read and the
// write are all of its target, so that writers naming the link and writers
// naming the target take turns. A dangling link is followed too: its target
// is created, and the link stays a link. Messages name path as given.
func EditKeyFile(path string, change func(*KeyFile) error) error {
	target, unlock, err := flock.LockTarget(path)
	if err != nil {
		return fmt.Errorf("locking key file %s: %w", path, err)
	}
	defer unlock()

	mode := fs.FileMode(0o600)
	data, err := os.ReadFile(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = []byte(`{"keys": []}`)
	case err != nil:
		return fmt.Errorf("key file %s: %w", path, err)
	default:
		if info, err := os.Stat(target); err == nil {
			mode = info.Mode().Perm()
		}
		if _, err := keystore.ParseAndValidate(data); err != nil {
			return fmt.Errorf("key file %s is invalid, so it was left as it is: %w", path, err)
		}
	}
	kf, err := parseEditable(data)
	if err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if err := change(kf); err != nil {
		return err
	}
	out, err := kf.encode()
	if err != nil {
		return err
	}
	if _, err := keystore.ParseAndValidate(out); err != nil {
		return fmt.Errorf("the change would make key file %s invalid, so it was not written: %w", path, err)
	}
	return atomicfile.WriteFile(target, out, mode)
}

// Find returns the record with the id, or nil.
func (kf *KeyFile) Find(id string) *RecordFields {
	for _, r := range kf.Records {
		var got string
		if json.Unmarshal(r.Get("id"), &got) == nil && got == id {
			return r
		}
	}
	return nil
}

// Add appends a record.
func (kf *KeyFile) Add(rec keystore.Record) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	r, err := parseObject(data)
	if err != nil {
		return err
	}
	kf.Records = append(kf.Records, &RecordFields{fields: r})
	return nil
}

// Get returns a field's raw value, or nil.
func (r *RecordFields) Get(name string) json.RawMessage {
	for _, f := range r.fields {
		if f.name == name {
			return f.value
		}
	}
	return nil
}

// Decode reads the whole record.
func (r *RecordFields) Decode() (keystore.Record, error) {
	data, err := encodeObject(r.fields)
	if err != nil {
		return keystore.Record{}, err
	}
	return keystore.DecodeRecord(data)
}

// Set sets a field, in place if it exists, else at the end.
func (r *RecordFields) Set(name string, value any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	for i := range r.fields {
		if r.fields[i].name == name {
			r.fields[i].value = data
			return nil
		}
	}
	r.fields = append(r.fields, field{name: name, value: data})
	return nil
}

func parseEditable(data []byte) (*KeyFile, error) {
	top, err := parseObject(data)
	if err != nil {
		return nil, err
	}
	kf := &KeyFile{top: top}
	for _, f := range top {
		if f.name != "keys" {
			continue
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(f.value, &raws); err != nil {
			return nil, err
		}
		for _, raw := range raws {
			fields, err := parseObject(raw)
			if err != nil {
				return nil, err
			}
			kf.Records = append(kf.Records, &RecordFields{fields: fields})
		}
	}
	return kf, nil
}

// parseObject reads a JSON object's fields in order.
func parseObject(data []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var fields []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		fields = append(fields, field{name: name, value: value})
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		return nil, err
	}
	return fields, nil
}

func encodeObject(fields []field) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(f.name)
		b.Write(name)
		b.WriteByte(':')
		b.Write(f.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// encode writes the file: top-level fields in order, one record a line.
func (kf *KeyFile) encode() ([]byte, error) {
	records := make([]string, len(kf.Records))
	for i, r := range kf.Records {
		data, err := encodeObject(r.fields)
		if err != nil {
			return nil, err
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil {
			return nil, err
		}
		records[i] = "    " + compact.String()
	}
	keys := "[\n" + strings.Join(records, ",\n") + "\n  ]"
	if len(records) == 0 {
		keys = "[]"
	}
	var b bytes.Buffer
	b.WriteString("{\n")
	wroteKeys := false
	for i, f := range kf.top {
		if i > 0 {
			b.WriteString(",\n")
		}
		name, _ := json.Marshal(f.name)
		b.WriteString("  ")
		b.Write(name)
		b.WriteString(": ")
		if f.name == "keys" {
			b.WriteString(keys)
			wroteKeys = true
		} else {
			b.Write(f.value)
		}
	}
	if !wroteKeys {
		if len(kf.top) > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(`  "keys": ` + keys)
	}
	b.WriteString("\n}\n")
	return b.Bytes(), nil
}
