package keyfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// A reload reads the key file as a stream rather than whole. A reload holds
// the old keys, in force until the swap, while the new version is decoded;
// read whole, a file of a million records (180 MB) was held too, with the
// JSON decoder's own copy of it (grown by doubling), and a reload's peak RSS
// was 4.5 times the steady RSS (3.2 read as a stream). The stream is
// decoded record by record with the rules of keystore.ParseRecords (unknown
// fields are errors); anything but the plain shape, {"keys": [ ... ]}, and
// every error, is read again whole and parsed by keystore.ParseAndValidate,
// so that errors name the record and field as before and odd but valid
// files (a "Keys" field, a repeated "keys") load as before. The first load
// reads the file whole: decoding record by record is about a quarter slower,
// and there are no old keys to hold then.

// streamKeyFile reads, checks and indexes the key file at path as a
// stream, and returns the SHA-256 of the content it read: zero when it
// could not be read. Errors name the file as name.
func streamKeyFile(name, path string) (*keystore.Set, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return nil, sum, fmt.Errorf("key file %s: %w", name, err)
	}
	defer f.Close()
	h := sha256.New()
	records, ok := decodeRecords(io.TeeReader(f, h))
	if !ok {
		data, err := readAllFrom(f) // the same open file: the same version
		if err != nil {
			return nil, sum, fmt.Errorf("key file %s: %w", name, err)
		}
		set, err := parseKeyFile(name, data)
		return set, sha256.Sum256(data), err
	}
	if _, err := io.Copy(h, f); err != nil { // the decoder read to the end; to be sure
		return nil, sum, fmt.Errorf("key file %s: %w", name, err)
	}
	h.Sum(sum[:0])
	set, err := keystore.NewSet(records)
	if err != nil {
		return nil, sum, fmt.Errorf("key file %s: %w", name, err)
	}
	return set, sum, nil
}

// decodeRecords decodes {"keys": [ ... ]} record by record; ok is false for
// anything else, or any error.
func decodeRecords(r io.Reader) (records []keystore.Record, ok bool) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	for _, want := range []json.Token{json.Delim('{'), "keys", json.Delim('[')} {
		if t, err := dec.Token(); err != nil || t != want {
			return nil, false
		}
	}
	records = []keystore.Record{}
	for dec.More() {
		var rec keystore.Record
		if err := dec.Decode(&rec); err != nil {
			return nil, false
		}
		records = append(records, rec)
	}
	for _, want := range []json.Token{json.Delim(']'), json.Delim('}')} {
		if t, err := dec.Token(); err != nil || t != want {
			return nil, false
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false // more after the object
	}
	return records, true
}

// readAllFrom reads an open file whole, from its start.
func readAllFrom(f *os.File) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if info, err := f.Stat(); err == nil && info.Size() < 1<<40 {
		buf.Grow(int(info.Size()) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

// hashFile returns the SHA-256 of the file at path, read as a stream.
func hashFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// largeKeyFile is the size from which a key file's load is followed by
// debug.FreeOSMemory (see releaseMemory).
const largeKeyFile = 16 << 20 // about 90,000 records

// releaseMemory returns to the operating system the memory a large key
// file's load used and let go of (the file as read, its records as decoded,
// and after a reload the previous keys). Without it the process keeps that
// memory (its RSS stays near the load's peak, three times the keys' needs
// for a million keys) until the runtime's next periodic collection, two
// minutes on, and its scavenger's slow return after. It costs one
// collection, on the loading goroutine (the watcher's, or the config
// load's), never a request's; a small file is not worth it.
func releaseMemory(size int64) {
	if size >= largeKeyFile {
		debug.FreeOSMemory()
	}
}
