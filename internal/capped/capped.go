// Package capped reads files up to a cap, so that a path naming something
// endless (/dev/zero, a pipe that never closes) or a file far larger than
// it could be fails with a clear error instead of filling the memory.
package capped

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// The caps of the files the gateway and its commands read.
const (
	// KeyFile bounds a key file, and a file caddy apikey import reads:
	// 256 MiB, about 1.4 million records of the shape caddy apikey new
	// writes (a million are 178 MB).
	KeyFile = 256 << 20
	// Secret bounds a file holding a password or a secret (the Redis
	// password file, an upstream secret file).
	Secret = 64 << 10
	// Small bounds a file of a few fields, such as an audit log's head.
	Small = 64 << 10
	// State bounds the counter and usage files Caddy saves and loads.
	State = 1 << 30
)

// TooLargeError is a file over its cap. It names the file and the cap,
// never the content.
type TooLargeError struct {
	What  string // "key file", "secret file", ...
	Path  string
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s %s is larger than %s, the most it may be; it was not read", e.What, e.Path, Size(e.Limit))
}

// Is lets errors.Is(err, ErrTooLarge) find every TooLargeError.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// ErrTooLarge matches a TooLargeError with errors.Is.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads the file at path whole, if it holds at most limit bytes;
// otherwise it fails with a *TooLargeError naming what and path. It reads at
// most limit+1 bytes whatever the file is (a device, a pipe).
func ReadFile(what, path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, what, path, limit)
}

// ReadAll reads r to its end, if it holds at most limit bytes; otherwise it
// fails with a *TooLargeError naming what and path. A regular file is read
// into one buffer of its size; anything else (a pipe, a device) in chunks,
// joined at the end, so that what is held never passes the cap before the
// error (and twice what was read, the moment they are joined).
func ReadAll(r io.Reader, what, path string, limit int64) ([]byte, error) {
	tooLarge := &TooLargeError{What: what, Path: path, Limit: limit}
	if f, ok := r.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode().IsRegular() {
			if info.Size() > limit {
				return nil, tooLarge
			}
			var buf bytes.Buffer
			buf.Grow(int(info.Size()) + bytes.MinRead)
			if _, err := buf.ReadFrom(io.LimitReader(r, limit+1)); err != nil {
				return nil, err
			}
			if int64(buf.Len()) > limit { // it grew since the stat
				return nil, tooLarge
			}
			return buf.Bytes(), nil
		}
	}
	const chunk = 1 << 20
	var chunks [][]byte
	var total int64
	for {
		c := make([]byte, min(chunk, limit+1-total))
		n, err := io.ReadFull(r, c)
		total += int64(n)
		if n > 0 {
			chunks = append(chunks, c[:n])
		}
		if total > limit {
			return nil, tooLarge
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return bytes.Join(chunks, nil), nil
}

// Size writes a number of bytes as people read it: 256 MiB, 64 KiB.
func Size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
