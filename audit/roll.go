package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// Roll is how a writer rolls the log by size. When an append leaves the
// log at Size bytes or more, the log and its head are moved aside, to
// <path>.<UTC time to the nanosecond> (and .head), and a new log starts
// with an audit.continued entry that chains to the last line of the old
// one: the chain, and the head, go on across files. Of the rolled files,
// the Keep newest are kept, older ones deleted.
type Roll struct {
	// Size in bytes; 0 never rolls.
	Size int64
	// Keep is the number of rolled files kept; 0 keeps them all.
	Keep int
}

// EventContinued is the first line of a log that a roll started: its
// "prev" is the hash of the last line of the rolled file, named in
// previous_file (a name in the same folder), previous_lines and
// previous_sha256.
const EventContinued = "audit.continued"

// rolledLayout is the time in a rolled file's name: it sorts as it reads,
// and differs from Rotate's (to the second), whose files start new chains.
const rolledLayout = "20060102T150405.000000000Z"

// AppendRolling is Append, then a roll when roll says the log is full.
func AppendRolling(path string, roll Roll, entries ...Entry) error {
	path = flock.Resolve(path)
	unlock, err := flock.Lock(path)
	if err != nil {
		return fmt.Errorf("locking audit log %s: %w", path, err)
	}
	defer unlock()
	head, err := appendLocked(path, entries)
	if err != nil || roll.Size <= 0 || head.Size < roll.Size {
		return err
	}
	if err := rollLocked(path, head, time.Now()); err != nil {
		return fmt.Errorf("the entries were written, but rolling the audit log failed: %w", errors.Join(ErrHeadNotWritten, err))
	}
	if roll.Keep > 0 {
		rolled, err := rolledFiles(path)
		if err != nil {
			return nil // pruned on the next roll
		}
		for _, name := range rolled[:max(0, len(rolled)-roll.Keep)] {
			os.Remove(name + ".head")
			os.Remove(name)
		}
	}
	return nil
}

// rollLocked moves the log at path (whose head is head) aside and starts a
// new one that continues its chain. On failure the log is left, or put
// back, where it was.
func rollLocked(path string, head Head, now time.Time) error {
	aside := path + "." + now.UTC().Format(rolledLayout)
	for {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		now = now.Add(time.Nanosecond)
		aside = path + "." + now.UTC().Format(rolledLayout)
	}
	line, err := json.Marshal(Entry{"event": EventContinued, "ts": now.UTC().Format(time.RFC3339Nano),
		"previous_file": filepath.Base(aside), "previous_lines": head.Lines, "previous_sha256": head.SHA256, "prev": head.SHA256})
	if err != nil {
		return err
	}
	if err := os.Rename(path, aside); err != nil {
		return err
	}
	headMoved := os.Rename(path+".head", aside+".head") == nil
	undo := func(err error) error {
		os.Remove(path)
		if headMoved {
			os.Rename(aside+".head", path+".head")
		}
		os.Rename(aside, path)
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return undo(err)
	}
	atomicfile.MatchOwner(f, aside)
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return undo(err)
	}
	return writeHead(path, Head{Lines: 1, SHA256: lineHash(line), Size: int64(len(line) + 1)})
}

// rolledFiles lists the files rolled from the log at path (resolved),
// oldest first.
func rolledFiles(path string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(path) + "."
	var names []string
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if _, err := time.Parse(rolledLayout, name); err == nil {
			names = append(names, filepath.Join(filepath.Dir(path), e.Name()))
		}
	}
	slices.Sort(names)
	return names, nil
}

// continued reads the first line of the log at path: the head of the file
// it continues and that file's path, or ok false when it starts a chain.
func continued(path string) (prevPath string, prev Head, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", Head{}, false, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, _ := f.Read(buf)
	first, _, _ := bytes.Cut(buf[:n], []byte{'\n'})
	var e struct {
		Event          string `json:"event"`
		PreviousFile   string `json:"previous_file"`
		PreviousLines  int64  `json:"previous_lines"`
		PreviousSHA256 string `json:"previous_sha256"`
	}
	if json.Unmarshal(first, &e) != nil || e.Event != EventContinued {
		return "", Head{}, false, nil
	}
	if e.PreviousFile == "" || e.PreviousFile != filepath.Base(e.PreviousFile) || strings.HasPrefix(e.PreviousFile, ".") {
		return "", Head{}, false, fmt.Errorf("line 1: previous_file %q is not a file name in the log's folder", e.PreviousFile)
	}
	return filepath.Join(filepath.Dir(path), e.PreviousFile), Head{Lines: e.PreviousLines, SHA256: e.PreviousSHA256}, true, nil
}
