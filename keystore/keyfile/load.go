package keyfile

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// A key file is loaded as a stream of records, and a new version of it
// reuses what did not change. A reload holds the keys in force until the
// swap; when every record of the new version was decoded and compiled anew
// from a whole []Record, the process held the old keys, as many new ones and
// the records they came from: for a million records the reload's peak RSS
// was 3.3 to 3.5 times the steady RSS. Now the file is split into records
// without decoding them (a buffer of a few megabytes at a time, never the
// whole file), each record's bytes are fingerprinted (a seeded 64-bit hash,
// 8 bytes a record, kept with the version), and a record whose bytes are
// those of a record of the version in force takes that record's compiled
// key as it is; the others are decoded and compiled, on every core when
// they are many (the first load). The new version is indexed from its keys
// (keystore.NewSetOfKeys: the same checks of ids and hashes over all of
// them), so a change of one record costs the new index, not new keys.
//
// The records are decoded with keystore.DecodeRecord's rules (unknown fields
// are errors); anything but the plain shape, {"version": 1, "keys": [ {...},
// ... ]} with or without the version, and
// every error, is read again whole and parsed by keystore.ParseAndValidate,
// so that errors name the record and field as before and odd but valid
// files (a "Keys" field, a repeated "keys") load as before, their records
// then not fingerprinted (the next version is compiled whole).

// loaded is a version of a key file as loaded.
type loaded struct {
	set *keystore.Set
	// sums fingerprints each record's bytes, in the order of set.Keys();
	// nil when the file was parsed whole.
	sums []uint64
}

// recordSeed seeds the records' fingerprints: random in each process, so
// that no file can be written to make two records' fingerprints collide.
var recordSeed = maphash.MakeSeed()

// loadKeyFile reads, checks and indexes the key file at path, reusing the
// keys of prev (nil for none) whose records are unchanged, and returns the
// SHA-256 of the content it read (zero when it could not be read) when
// hashed. Errors name the file as name.
func loadKeyFile(name, path string, prev *loaded, hashed bool) (*loaded, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return nil, sum, fmt.Errorf("key file %s: %w", name, err)
	}
	defer f.Close()
	size := int64(0)
	if info, err := f.Stat(); err == nil {
		size = info.Size()
	}
	tooLarge := &capped.TooLargeError{What: "key file", Path: name, Limit: maxFileSize}
	if size > maxFileSize {
		return nil, sum, tooLarge
	}
	// Whatever the stat said (a device, a file growing), no more than the
	// cap and one byte is read.
	limited := &io.LimitedReader{R: f, N: maxFileSize + 1}
	var r io.Reader = limited
	var h hash.Hash
	if hashed {
		h = sha256.New()
		r = io.TeeReader(limited, h)
	}
	l := newLoader(r, prev, size)
	if !l.scan() || limited.N == 0 {
		l = nil
		data, err := readAllFrom(f, name) // the same open file: the same version
		if err != nil {
			return nil, sum, err
		}
		if hashed {
			sum = sha256.Sum256(data)
		}
		set, err := parseKeyFile(name, data)
		if err != nil {
			return nil, sum, err
		}
		return &loaded{set: set}, sum, nil
	}
	if hashed {
		if _, err := io.Copy(h, limited); err != nil { // the scan read to the end; to be sure
			return nil, sum, fmt.Errorf("key file %s: %w", name, err)
		}
		h.Sum(sum[:0])
	}
	if limited.N == 0 {
		return nil, sum, tooLarge
	}
	// The buffer and prev's sorted fingerprints are let go of here, before
	// the new index is made. Every record compiled: the checks left are
	// NewSet's over all the records, with its errors.
	keys, sums := l.result()
	set, err := keystore.NewSetOfKeys(keys)
	if err != nil {
		return nil, sum, fmt.Errorf("key file %s: %w", name, err)
	}
	return &loaded{set: set, sums: sums}, sum, nil
}

// loader splits a key file into records as it reads it, and turns each
// into a key: prev's, when the record is unchanged, or a new one.
type loader struct {
	r          io.Reader
	buf        []byte
	pos, end   int // unread data: buf[pos:end]
	eof        bool
	readErr    error
	keys       []*keystore.Key
	sums       []uint64
	pending    []pendingRecord // to decode and compile before buf moves
	prev       *loaded
	prevKeys   []*keystore.Key
	cursor     int     // the record of prev expected next
	misses     int     // records not found at or near the cursor
	prevSorted []sumAt // prev's fingerprints in order, made after many misses
	failed     atomic.Bool
}

type pendingRecord struct {
	index int
	raw   []byte
}

type sumAt struct {
	sum uint64
	at  int
}

// loadBuffer is the buffer a key file is read into; it grows for a larger
// record. A variable for tests.
var loadBuffer = 4 << 20

const (
	// lookAhead is how many records past the cursor an unchanged record is
	// looked for (records removed) before the sorted index is needed.
	lookAhead = 8
	// missesBeforeIndex is how many records are looked for near the cursor
	// only (records added or changed) before prev's fingerprints are
	// sorted, for records moved about.
	missesBeforeIndex = 64
)

func newLoader(r io.Reader, prev *loaded, size int64) *loader {
	l := &loader{r: r, buf: make([]byte, min(max(size+1, 512), int64(loadBuffer)))}
	n := int(size / 128) // a short record is about 150 bytes
	if prev != nil && prev.sums != nil {
		l.prev, l.prevKeys = prev, prev.set.Keys()
		n = len(prev.sums) + 16
	}
	n = min(n, 1<<24)
	l.keys, l.sums = make([]*keystore.Key, 0, n), make([]uint64, 0, n)
	return l
}

// result returns the keys and their records' fingerprints, in slices no
// larger than they need be: the set keeps the keys.
func (l *loader) result() ([]*keystore.Key, []uint64) {
	keys, sums := l.keys, l.sums
	if cap(keys) > len(keys)+len(keys)/16+16 {
		keys = slices.Clone(keys)
	}
	if cap(sums) > len(sums)+len(sums)/16+16 {
		sums = slices.Clone(sums)
	}
	return keys, sums
}

// scan reads the whole file and reports whether it is the plain shape with
// every record decoded and compiled.
func (l *loader) scan() bool {
	expect := func(b byte) bool {
		if !l.skipSpace() || l.buf[l.pos] != b {
			return false
		}
		l.pos++
		return true
	}
	if !expect('{') || !l.version() {
		return false
	}
	const keys = `"keys"`
	if !l.skipSpace() || !l.more(len(keys)) || string(l.buf[l.pos:l.pos+len(keys)]) != keys {
		return false
	}
	l.pos += len(keys)
	if !expect(':') || !expect('[') {
		return false
	}
	if !l.skipSpace() {
		return false
	}
	if l.buf[l.pos] == ']' {
		l.pos++
	} else if !l.records() {
		return false
	}
	if !l.skipSpace() || l.buf[l.pos] != '}' {
		return false
	}
	l.pos++
	if l.skipSpace() { // anything after the object
		return false
	}
	return l.eof && l.readErr == nil && l.flush()
}

// version reads a leading "version": 1, if there is one. Any other version,
// or one elsewhere, is left to the whole parse (and its errors).
func (l *loader) version() bool {
	const version = `"version"`
	if !l.skipSpace() || !l.more(len(version)) || string(l.buf[l.pos:l.pos+len(version)]) != version {
		return true
	}
	l.pos += len(version)
	if !l.skipSpace() || l.buf[l.pos] != ':' {
		return false
	}
	l.pos++
	if !l.skipSpace() || !l.more(2) || l.buf[l.pos] != '0'+keystore.FileVersion || (l.buf[l.pos+1] >= '0' && l.buf[l.pos+1] <= '9') {
		return false
	}
	l.pos++
	if !l.skipSpace() || l.buf[l.pos] != ',' {
		return false
	}
	l.pos++
	return true
}

// records reads the array's records, up to and past its closing bracket.
func (l *loader) records() bool {
	for {
		if !l.skipSpace() || l.buf[l.pos] != '{' {
			return false
		}
		var next int
		for {
			end, err := skipValue(l.buf[:l.end], l.pos)
			if err == nil {
				if next = skipSpace(l.buf[:l.end], end); next < l.end {
					l.record(l.buf[l.pos:end])
					break
				}
			}
			if !l.fill() {
				return false
			}
		}
		sep := l.buf[next]
		l.pos = next + 1
		switch sep {
		case ']':
			return true
		case ',':
		default:
			return false
		}
	}
}

// record takes the next record, as written.
func (l *loader) record(raw []byte) {
	sum := maphash.Bytes(recordSeed, raw)
	l.sums = append(l.sums, sum)
	k := l.reuse(sum)
	l.keys = append(l.keys, k)
	if k == nil {
		l.pending = append(l.pending, pendingRecord{index: len(l.keys) - 1, raw: raw})
	}
}

// reuse returns prev's key for a record whose fingerprint is sum, or nil:
// first at the cursor and a few records on, then (after many misses)
// anywhere.
func (l *loader) reuse(sum uint64) *keystore.Key {
	if l.prev == nil {
		return nil
	}
	sums := l.prev.sums
	for j := l.cursor; j < min(l.cursor+lookAhead, len(sums)); j++ {
		if sums[j] == sum {
			l.cursor = j + 1
			return l.prevKeys[j]
		}
	}
	if l.misses++; l.misses < missesBeforeIndex {
		return nil
	}
	if l.prevSorted == nil {
		l.prevSorted = make([]sumAt, len(sums))
		for j, s := range sums {
			l.prevSorted[j] = sumAt{s, j}
		}
		slices.SortFunc(l.prevSorted, func(a, b sumAt) int {
			switch {
			case a.sum < b.sum:
				return -1
			case a.sum > b.sum:
				return 1
			}
			return 0
		})
	}
	i, found := slices.BinarySearchFunc(l.prevSorted, sum, func(e sumAt, s uint64) int {
		switch {
		case e.sum < s:
			return -1
		case e.sum > s:
			return 1
		}
		return 0
	})
	if !found {
		return nil
	}
	j := l.prevSorted[i].at
	l.cursor = j + 1
	return l.prevKeys[j]
}

// flush decodes and compiles the records waiting for it, on every core when
// they are many, and reports whether all of them are valid.
func (l *loader) flush() bool {
	pending := l.pending
	l.pending = l.pending[:0]
	workers := runtime.GOMAXPROCS(0)
	if len(pending) < 256 || workers < 2 {
		workers = 1
	}
	var wg sync.WaitGroup
	chunk := (len(pending) + workers - 1) / workers
	for start := 0; start < len(pending); start += chunk {
		part := pending[start:min(start+chunk, len(pending))]
		wg.Go(func() { l.compile(part) })
	}
	wg.Wait()
	return !l.failed.Load()
}

// compile decodes and compiles records with keystore.DecodeRecord's rules:
// one decoder reads them all, one after another, which leaves less garbage
// among the keys than a decoder a record (the records are split at their
// closing braces, so the decoder reads each to its end, or fails).
func (l *loader) compile(part []pendingRecord) {
	dec := json.NewDecoder(&recordsReader{records: part})
	dec.DisallowUnknownFields()
	// All of them decoded, then all compiled: the keys and what they keep
	// of their records are not strewn among what decoding and compiling
	// throw away, which would keep more memory in use once that is freed.
	records := make([]keystore.Record, len(part))
	for i := range records {
		if l.failed.Load() {
			return
		}
		if err := dec.Decode(&records[i]); err != nil {
			l.failed.Store(true)
			return
		}
	}
	if dec.More() {
		l.failed.Store(true)
		return
	}
	for i, p := range part {
		k, err := keystore.Compile(records[i])
		if err != nil {
			l.failed.Store(true)
			return
		}
		l.keys[p.index] = k
	}
}

// recordsReader reads records one after another, a new line after each.
type recordsReader struct {
	records []pendingRecord
	off     int // into records[0].raw; len+1 once its new line is read
}

func (r *recordsReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.records) > 0 {
		raw := r.records[0].raw
		if r.off < len(raw) {
			c := copy(p[n:], raw[r.off:])
			n += c
			r.off += c
			continue
		}
		p[n] = '\n'
		n++
		r.records, r.off = r.records[1:], 0
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// fill reads more of the file, after the records waiting in the buffer are
// compiled; it reports whether it read anything.
func (l *loader) fill() bool {
	if l.eof || !l.flush() {
		return false
	}
	if l.pos > 0 {
		l.end = copy(l.buf, l.buf[l.pos:l.end])
		l.pos = 0
	}
	if l.end == len(l.buf) { // one record fills the buffer
		l.buf = append(l.buf, make([]byte, len(l.buf))...)
	}
	for {
		n, err := l.r.Read(l.buf[l.end:])
		l.end += n
		if err == io.EOF {
			l.eof = true
			return n > 0
		}
		if err != nil {
			l.eof, l.readErr = true, err // the whole read that follows reports it
			return false
		}
		if n > 0 {
			return true
		}
	}
}

// skipSpace moves past white space and reports whether a byte follows.
func (l *loader) skipSpace() bool {
	for {
		l.pos = skipSpace(l.buf[:l.end], l.pos)
		if l.pos < l.end {
			return true
		}
		if !l.fill() {
			return false
		}
	}
}

// more reports whether n bytes are buffered, reading more when needed.
func (l *loader) more(n int) bool {
	for l.end-l.pos < n {
		if !l.fill() {
			return false
		}
	}
	return true
}

// maxFileSize is the most a key file may hold (capped.KeyFile); a
// variable for tests.
var maxFileSize int64 = capped.KeyFile

// readAllFrom reads an open file whole, from its start, up to the cap;
// errors name the file as name.
func readAllFrom(f *os.File, name string) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("key file %s: %w", name, err)
	}
	data, err := capped.ReadAll(f, "key file", name, maxFileSize)
	var tooLarge *capped.TooLargeError
	if err != nil && !errors.As(err, &tooLarge) {
		err = fmt.Errorf("key file %s: %w", name, err)
	}
	return data, err
}

// ReadFile reads the key file at path whole, up to the cap (a larger file
// is an error naming it); errors name the file.
func ReadFile(path string) ([]byte, error) {
	data, err := capped.ReadFile("key file", path, maxFileSize)
	var tooLarge *capped.TooLargeError
	if err != nil && !errors.As(err, &tooLarge) {
		err = fmt.Errorf("key file %s: %w", path, err)
	}
	return data, err
}

// hashFile returns the SHA-256 of the file at path, read as a stream, and
// no further than one byte past the cap (a larger file does not load
// anyway).
func hashFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, maxFileSize+1)); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// largeKeyFile is the size from which a key file's load is followed by
// debug.FreeOSMemory (see releaseMemory).
const largeKeyFile = 16 << 20 // about 90,000 records

// releaseMemory returns to the operating system the memory a large key
// file's load used and let go of (the buffer it was read through, the
// records decoded, the index being checked, and after a reload the previous
// version's index and replaced keys). Without it the process keeps that
// memory until the runtime's next periodic collection, two minutes on, and
// its scavenger's slow return after. It costs one collection, on the
// loading goroutine (the watcher's, or the config load's), never a
// request's; a small file is not worth it.
func releaseMemory(size int64) {
	if size >= largeKeyFile {
		debug.FreeOSMemory()
	}
}
