// Package audit writes and verifies a log of JSON lines in which every line
// carries the SHA-256 of the line before it, so that removing or editing a
// line is detectable; a head recorded beside the log (and, by the operator,
// elsewhere) makes lines cut from the end detectable too.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
)

// Genesis is the "prev" of the first line.
var Genesis = hex.EncodeToString(make([]byte, sha256.Size))

// Entry is one line's content. Never put a key or a hash of one in it.
type Entry map[string]any

// Events the writers add themselves.
const (
	// EventRecovered follows a line that a write left without its newline
	// (a full disk, a crash): the writer closed the line off, kept it as
	// evidence outside the chain, and names it in torn_line, torn_bytes and
	// torn_sha256.
	EventRecovered = "audit.recovered"
	// EventTruncated says the writer found the log cut: it no longer held
	// the head recorded beside it (head_lines, head_sha256; lines_found is
	// what was left). Verification fails on it.
	EventTruncated = "audit.truncated"
)

// ErrHeadNotWritten is returned, wrapped, by Append when the entries were
// written but the head beside the log could not be updated. The next append
// updates it; do not write the entries again.
var ErrHeadNotWritten = errors.New("the entries were written, but the head file was not")

// Append writes entries to the log at path, under an exclusive lock shared
// with every other writer (a running Caddy, the caddy apikey commands), so
// that the chain stays whole. Each entry gets "ts" (when not set) and "prev".
// A path that is a symbolic link is followed.
//
// Before writing, Append looks at how the log ends. A last line without its
// newline, left by a write that was cut short, is closed off and kept, and
// the first line written is an audit.recovered entry naming it. A log that
// no longer holds the head recorded beside it was cut, and an
// audit.truncated entry says so. After writing, Append records the new head
// (see Head). A write that fails is undone, as far as the system allows, so
// that the same entries can be tried again.
func Append(path string, entries ...Entry) error {
	return AppendRolling(path, Roll{}, entries...)
}

// appendLocked is Append with the lock held (path resolved); it returns
// the new head.
func appendLocked(path string, entries []Entry) (Head, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR|os.O_APPEND, 0o600)
	if err == nil {
		atomicfile.MatchOwner(f, path) // a new log belongs to its folder's owner
	} else if f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0); err != nil {
		return Head{}, err
	}
	defer f.Close()
	end, err := inspect(f, path)
	if err != nil {
		return Head{}, fmt.Errorf("audit log %s: %w", path, err)
	}

	var buf bytes.Buffer
	var own []Entry
	lines, prev := end.lines, end.prev
	if end.torn != nil {
		buf.WriteByte('\n')
		lines++
		own = append(own, Entry{"event": EventRecovered, "torn_line": end.torn.line,
			"torn_bytes": end.torn.bytes, "torn_sha256": end.torn.sum})
	}
	if end.cut != nil {
		own = append(own, Entry{"event": EventTruncated, "head_lines": end.cut.Lines,
			"head_sha256": end.cut.SHA256, "lines_found": end.lines})
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, e := range append(own, entries...) {
		if _, ok := e["ts"]; !ok {
			e["ts"] = now
		}
		e["prev"] = prev
		e["v"] = FormatVersion
		line, err := json.Marshal(e) // map keys come out sorted: lines are stable
		if err != nil {
			return Head{}, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
		prev = lineHash(line)
		lines++
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		_ = f.Truncate(end.size) // leave no half of it behind
		return Head{}, err
	}
	if err := f.Sync(); err != nil {
		_ = f.Truncate(end.size)
		return Head{}, err
	}
	head := Head{Lines: lines, SHA256: prev, Size: end.size + int64(buf.Len())}
	if err := writeHead(path, head); err != nil {
		return head, fmt.Errorf("audit log %s: %w: %v", path, ErrHeadNotWritten, err)
	}
	return head, nil
}

func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// logEnd is how a log ends, as Append finds it.
type logEnd struct {
	size  int64  // bytes
	lines int64  // whole lines
	prev  string // hash of the last whole line, or Genesis
	torn  *tornLine
	cut   *Head // the recorded head the log no longer holds
}

type tornLine struct {
	line, bytes int64
	sum         string
}

// inspect reads how f ends, reading only its end when the head recorded
// beside it is there: no more than a line, whatever the log's size.
func inspect(f *os.File, path string) (logEnd, error) {
	info, err := f.Stat()
	if err != nil {
		return logEnd{}, err
	}
	end := logEnd{size: info.Size(), prev: Genesis}
	whole, err := lineStart(f, end.size) // where the last, unfinished line starts
	if err != nil {
		return end, err
	}
	head, headErr := readHeadFile(path)
	var newer *NewerFormatError
	if errors.As(headErr, &newer) {
		return end, fmt.Errorf("%w (nothing was written)", headErr)
	}
	switch {
	case headErr == nil && head.Size <= whole && holds(f, head):
		n, err := countLines(f, head.Size, whole)
		if err != nil {
			return end, err
		}
		end.lines = head.Lines + n
	default:
		if headErr == nil {
			end.cut = &head
		}
		if end.lines, err = countLines(f, 0, whole); err != nil {
			return end, err
		}
	}
	if whole > 0 {
		from, err := lineStart(f, whole-1)
		if err != nil {
			return end, err
		}
		var newer error
		if end.prev, newer, err = readLastLine(f, from, whole-1); err != nil {
			return end, err
		}
		if newer != nil {
			return end, fmt.Errorf("%w (nothing was written)", newer)
		}
	}
	if whole < end.size {
		sum, err := hashRange(f, whole, end.size)
		if err != nil {
			return end, err
		}
		end.torn = &tornLine{line: end.lines + 1, bytes: end.size - whole, sum: sum}
	}
	return end, nil
}

// holds reports whether f still holds head: a line ending at head.Size
// whose hash is head.SHA256.
func holds(f *os.File, head Head) bool {
	if head.Size == 0 {
		return head.Lines == 0
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], head.Size-1); err != nil || last[0] != '\n' {
		return false
	}
	from, err := lineStart(f, head.Size-1)
	if err != nil {
		return false
	}
	sum, err := hashRange(f, from, head.Size-1)
	return err == nil && sum == head.SHA256
}

const chunk = 64 << 10

// lineStart returns where the line that ends at end (exclusive) starts: just
// after the newline before end, or 0.
func lineStart(f *os.File, end int64) (int64, error) {
	buf := make([]byte, chunk)
	for pos := end; pos > 0; {
		from := max(pos-chunk, 0)
		b := buf[:pos-from]
		if _, err := f.ReadAt(b, from); err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return from + int64(i) + 1, nil
		}
		pos = from
	}
	return 0, nil
}

// countLines counts the newlines in f between from and to.
func countLines(f *os.File, from, to int64) (int64, error) {
	buf := make([]byte, chunk)
	var n int64
	for pos := from; pos < to; {
		b := buf[:min(to-pos, chunk)]
		if _, err := f.ReadAt(b, pos); err != nil && err != io.EOF {
			return 0, err
		}
		n += int64(bytes.Count(b, []byte{'\n'}))
		pos += int64(len(b))
	}
	return n, nil
}

// hashRange is the SHA-256 of f's bytes between from and to.
func hashRange(f *os.File, from, to int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, from, to-from)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
