package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// FormatVersion is the format of the lines this release writes, in each
// line's "v" field (covered by the chain, as every field is) and in the head
// file's "version". A line or head without one is format 1: what v0.1.0
// wrote. Check refuses a line of a newer format, and Append refuses to
// write on after one, rather than chaining a line of this format to a log
// whose format it does not know.
const FormatVersion = 1

// NewerFormatError is a line or a head file written by a newer
// caddy-apikey, in a format this one does not read.
type NewerFormatError struct {
	// Line is the line's number; 0 for the head file.
	Line int64
	// HeadFile names the head file, when it is the head file.
	HeadFile string
	Version  int64
}

func (e *NewerFormatError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s is format %d; this caddy-apikey reads audit logs up to format %d: upgrade caddy-apikey", e.HeadFile, e.Version, FormatVersion)
	}
	return fmt.Sprintf("line %d is format %d; this caddy-apikey reads audit logs up to format %d: upgrade caddy-apikey", e.Line, e.Version, FormatVersion)
}

// lineVersion reads a line's "v": 1 when there is none.
func lineVersion(raw json.RawMessage) (int64, error) {
	if raw == nil {
		return 1, nil
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf(`"v" is %s, not a format version`, raw)
	}
	return v, nil
}

// readLastLine reads the last whole line of f (between from and to) once,
// for both things a writer needs from it: its hash, the next line's
// "prev", and whether it is of a newer format, which newer reports: no
// line is to be written on after one. A line that is not JSON is left to
// Check to report: Append has always written on after one. A line longer
// than maxLine is hashed as it is read, not held, and not looked into.
func readLastLine(f *os.File, from, to int64) (sum string, newer, err error) {
	if to-from > maxLine {
		sum, err = hashRange(f, from, to)
		return sum, nil, err
	}
	buf := make([]byte, to-from)
	if _, err := f.ReadAt(buf, from); err != nil {
		return "", nil, err
	}
	return lineHash(buf), lineFormat(buf), nil
}

// lineFormat refuses a line of a newer format.
func lineFormat(line []byte) error {
	var e struct {
		V json.RawMessage `json:"v"`
	}
	if json.Unmarshal(line, &e) != nil {
		return nil
	}
	if v, err := lineVersion(e.V); err == nil && v > FormatVersion {
		return fmt.Errorf("its last line is format %d; this caddy-apikey writes audit logs up to format %d: upgrade caddy-apikey", v, FormatVersion)
	}
	return nil
}

// CheckFormat returns the error Append would return for a log at path (or
// a head file beside it) of a newer format than this release writes, for
// a caller that must know before it makes the change it will record. A
// log that is not there, or cannot be read, is left to Append.
func CheckFormat(path string) error {
	path = flock.Resolve(path)
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var newer *NewerFormatError
	if _, err := readHeadFile(path); errors.As(err, &newer) {
		return fmt.Errorf("audit log %s: %w", path, err)
	}
	info, err := f.Stat()
	if err != nil {
		return nil
	}
	whole, err := lineStart(f, info.Size())
	if err != nil || whole == 0 {
		return nil
	}
	from, err := lineStart(f, whole-1)
	if err != nil {
		return nil
	}
	_, lineErr, err := readLastLine(f, from, whole-1)
	if err == nil {
		err = lineErr
	}
	if err != nil {
		return fmt.Errorf("audit log %s: %w", path, err)
	}
	return nil
}
