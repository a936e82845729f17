// Package audit writes and verifies a log of JSON lines in which every line
// carries the SHA-256 of the line before it, so that removing or editing a
// line is detectable.
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
	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// Genesis is the "prev" of the first line.
var Genesis = hex.EncodeToString(make([]byte, sha256.Size))

// Entry is one line's content. Never put a key or a hash of one in it.
type Entry map[string]any

// Append writes entries to the log at path, under an exclusive lock shared
// with every other writer (a running Caddy, the caddy apikey commands), so
// that the chain stays whole. Each entry gets "ts" (when not set) and "prev".
func Append(path string, entries ...Entry) error {
	unlock, err := flock.Lock(path)
	if err != nil {
		return fmt.Errorf("locking audit log %s: %w", path, err)
	}
	defer unlock()

	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR|os.O_APPEND, 0o600)
	if err == nil {
		atomicfile.MatchOwner(f, path) // a new log belongs to its folder's owner
	} else if f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0); err != nil {
		return err
	}
	defer f.Close()
	prev, err := lastLineHash(f)
	if err != nil {
		return fmt.Errorf("audit log %s: %w", path, err)
	}
	var buf bytes.Buffer
	for _, e := range entries {
		if _, ok := e["ts"]; !ok {
			e["ts"] = time.Now().UTC().Format(time.RFC3339Nano)
		}
		e["prev"] = prev
		line, err := json.Marshal(e) // map keys come out sorted: lines are stable
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
		prev = lineHash(line)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return err
	}
	return f.Sync()
}

func lineHash(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

// lastLineHash reads back from the end of f to its last line.
func lastLineHash(f *os.File) (string, error) {
	info, err := f.Stat()
	if err != nil {
		return "", err
	}
	size := info.Size()
	if size == 0 {
		return Genesis, nil
	}
	const chunk = 64 << 10
	for n := int64(chunk); ; n *= 2 {
		from := max(size-n, 0)
		buf := make([]byte, size-from)
		if _, err := f.ReadAt(buf, from); err != nil && err != io.EOF {
			return "", err
		}
		if buf[len(buf)-1] != '\n' {
			return "", errors.New("the last line is incomplete; run caddy apikey audit verify")
		}
		body := buf[:len(buf)-1]
		if i := bytes.LastIndexByte(body, '\n'); i >= 0 {
			return lineHash(body[i+1:]), nil
		}
		if from == 0 {
			return lineHash(body), nil
		}
	}
}

// Verify reads a whole log and checks the chain. It returns the number of
// lines and the hash of the last one (record it elsewhere to make an edit of
// the last line detectable too), or an error naming the first bad line.
func Verify(r io.Reader) (lines int, head string, err error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return 0, "", err
	}
	prev := Genesis
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return lines, "", fmt.Errorf("line %d: incomplete (no newline at the end)", lines+1)
		}
		line := data[:i]
		data = data[i+1:]
		lines++
		var e struct {
			Prev *string `json:"prev"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			return lines, "", fmt.Errorf("line %d: not valid JSON: %v", lines, err)
		}
		if e.Prev == nil {
			return lines, "", fmt.Errorf("line %d: no \"prev\" field", lines)
		}
		if *e.Prev != prev {
			if lines == 1 {
				return lines, "", fmt.Errorf("line 1: does not start the chain (lines before it were removed?)")
			}
			return lines, "", fmt.Errorf("line %d: does not follow line %d: line %d was edited, or lines were removed or inserted between them", lines, lines-1, lines-1)
		}
		prev = lineHash(line)
	}
	return lines, prev, nil
}
