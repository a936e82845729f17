package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
)

// tailWindow is the most of a log's end that Tail reads.
const tailWindow = 256 << 10

// Tail returns the last n entries of the log at path, oldest first, from
// its last 256 KiB at most: for showing what happened lately, not for
// verifying (see Check). Lines that are not whole JSON objects are skipped.
// A log that does not exist yet has no entries.
func Tail(path string, n int) ([]Entry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	start := max(0, end-tailWindow)
	buf := make([]byte, end-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if start > 0 {
		// The first line read is likely cut.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := bytes.Split(bytes.TrimRight(buf, "\n"), []byte("\n"))
	var entries []Entry
	for i := len(lines) - 1; i >= 0 && len(entries) < n; i-- {
		var e Entry
		if json.Unmarshal(lines[i], &e) == nil && e != nil {
			entries = append(entries, e)
		}
	}
	for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
		entries[i], entries[j] = entries[j], entries[i]
	}
	return entries, nil
}
