package keyfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// KeyFile is a key file opened for a change: its records as ordered fields,
// so that a change keeps every record and field it does not touch, in order.
type KeyFile struct {
	top     []field // top-level fields, "keys" among them
	Records []*RecordFields

	set  *keystore.Set  // the file's keys as checked before the change, in Records' order
	byID map[string]int // their ids, made when first needed
}

// RecordFields is one record as its fields, in file order.
type RecordFields struct {
	raw     json.RawMessage // as read; parsed into fields when first needed
	fields  []field
	parsed  bool
	touched bool // added or changed by this change
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
	data, err := capped.ReadFile("key file", target, maxFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = []byte(`{"version": 1, "keys": []}`)
	case errors.Is(err, capped.ErrTooLarge):
		return &capped.TooLargeError{What: "key file", Path: path, Limit: maxFileSize}
	case err != nil:
		return fmt.Errorf("key file %s: %w", path, err)
	}
	var set *keystore.Set
	if len(data) > 0 && err == nil {
		if info, err := os.Stat(target); err == nil {
			mode = info.Mode().Perm()
		}
		if set, err = keystore.ParseAndValidate(data); err != nil {
			return fmt.Errorf("key file %s is invalid, so it was left as it is: %w", path, err)
		}
	}
	kf, err := parseEditable(data)
	if err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if set != nil && set.Len() == len(kf.Records) {
		kf.set = set // the checked keys, in the records' order
	}
	if err := change(kf); err != nil {
		return err
	}
	kf.markVersion()
	out, err := kf.encode()
	if err != nil {
		return err
	}
	// A large file is checked again only where the change touched it: the
	// same rules as a whole check (every touched record valid, no id or
	// hash of another key), against the keys the first check indexed.
	if kf.set != nil && len(kf.Records) > checkWholeUpTo {
		err = kf.checkTouched()
	} else {
		_, err = keystore.ParseAndValidate(out)
	}
	if err != nil {
		return fmt.Errorf("the change would make key file %s invalid, so it was not written: %w", path, err)
	}
	return atomicfile.WriteFile(target, out, mode)
}

// checkWholeUpTo is the number of records up to which a changed file is
// checked whole again; past it, only what the change touched.
const checkWholeUpTo = 10000

// Find returns the record with the id, or nil.
func (kf *KeyFile) Find(id string) *RecordFields {
	if kf.set != nil {
		kf.indexIDs()
		if i, ok := kf.byID[id]; ok {
			return kf.Records[i]
		}
		for _, r := range kf.Records[kf.set.Len():] { // added by this change
			if r.id() == id {
				return r
			}
		}
		return nil
	}
	for _, r := range kf.Records {
		if r.id() == id {
			return r
		}
	}
	return nil
}

// indexIDs maps the checked keys' ids to their records, once.
func (kf *KeyFile) indexIDs() {
	if kf.byID != nil {
		return
	}
	keys := kf.set.Keys()
	kf.byID = make(map[string]int, len(keys))
	for i, k := range keys {
		kf.byID[k.ID] = i
	}
}

// id reads a record's id.
func (r *RecordFields) id() string {
	var got string
	_ = json.Unmarshal(r.Get("id"), &got)
	return got
}

// checkTouched checks the records the change added or edited against the
// keys the first check indexed: each valid on its own, none with another
// record's id, none answering to another key's hash.
func (kf *KeyFile) checkTouched() error {
	kf.indexIDs()
	hashes := map[keystore.Digest]string{}
	for i, r := range kf.Records {
		if !r.touched {
			continue
		}
		rec, err := r.Decode()
		if err != nil {
			return &keystore.RecordError{Index: i, ID: rec.ID, Err: err}
		}
		k, err := keystore.Compile(rec)
		if err != nil {
			return &keystore.RecordError{Index: i, ID: rec.ID, Err: err}
		}
		if j, ok := kf.byID[k.ID]; ok && j != i {
			return &keystore.RecordError{Index: i, ID: k.ID, Err: fmt.Errorf("id: duplicates keys[%d]", j)}
		}
		for j, other := range kf.Records[kf.set.Len():] {
			if other.touched && kf.set.Len()+j != i && other.id() == k.ID {
				return &keystore.RecordError{Index: i, ID: k.ID, Err: fmt.Errorf("id: duplicates keys[%d]", kf.set.Len()+j)}
			}
		}
		digests := []keystore.Digest{k.Digest}
		for _, p := range k.Previous {
			digests = append(digests, p.Digest)
		}
		for _, d := range digests {
			if m := kf.set.Lookup(d); m.Key != nil && m.Key.ID != k.ID {
				return &keystore.RecordError{Index: i, ID: k.ID, Err: fmt.Errorf("hash: answers to key %q too", m.Key.ID)}
			}
			if other, dup := hashes[d]; dup && other != k.ID {
				return &keystore.RecordError{Index: i, ID: k.ID, Err: fmt.Errorf("hash: answers to key %q too", other)}
			}
			hashes[d] = k.ID
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
	kf.Records = append(kf.Records, &RecordFields{fields: r, parsed: true, touched: true})
	return nil
}

// load parses the record's fields the first time they are needed: a change
// to one record of a large file parses that one only.
func (r *RecordFields) load() {
	if r.parsed {
		return
	}
	r.parsed = true
	if fields, err := parseObject(r.raw); err == nil {
		r.fields = fields
	}
}

// Get returns a field's raw value, or nil.
func (r *RecordFields) Get(name string) json.RawMessage {
	r.load()
	for _, f := range r.fields {
		if f.name == name {
			return f.value
		}
	}
	return nil
}

// Decode reads the whole record.
func (r *RecordFields) Decode() (keystore.Record, error) {
	r.load()
	return keystore.DecodeRecord(encodeObject(r.fields))
}

// Set sets a field, in place if it exists, else at the end.
func (r *RecordFields) Set(name string, value any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	r.setRaw(name, data)
	return nil
}

func parseEditable(data []byte) (*KeyFile, error) {
	top, err := splitObject(data)
	if err != nil {
		return nil, err
	}
	kf := &KeyFile{top: top}
	for _, f := range top {
		if f.name != "keys" {
			continue
		}
		raws, err := splitArray(f.value)
		if err != nil {
			return nil, err
		}
		kf.Records = make([]*RecordFields, len(raws))
		for i, raw := range raws {
			kf.Records[i] = &RecordFields{raw: raw}
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

func encodeObject(fields []field) []byte {
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
	return b.Bytes()
}

// markVersion gives a file written before the format had a version (it is
// version 1) its "version", first; a file that has one keeps it (the check
// before the change took only versions this release reads).
func (kf *KeyFile) markVersion() {
	for _, f := range kf.top {
		if f.name == "version" {
			return
		}
	}
	kf.top = append([]field{{name: "version", value: json.RawMessage(strconv.Itoa(keystore.FileVersion))}}, kf.top...)
}

// encode writes the file: top-level fields in order, one record a line.
func (kf *KeyFile) encode() ([]byte, error) {
	records := make([]string, len(kf.Records))
	for i, r := range kf.Records {
		data := []byte(r.raw)
		if r.parsed {
			data = encodeObject(r.fields)
		} else if compact(data) {
			records[i] = "    " + string(data)
			continue
		}
		var compacted bytes.Buffer
		if err := json.Compact(&compacted, data); err != nil {
			return nil, err
		}
		records[i] = "    " + compacted.String()
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
