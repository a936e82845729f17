package audit

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/capped"
	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// Head is where an audit log ends: its number of lines and the SHA-256 of
// its last line. The chain ties every line to the ones before it, so a head
// found at its line number vouches for every line up to it; a head that is
// not there any more means lines were cut from the end (or the log was
// emptied), which the chain alone cannot show.
//
// Every writer records the head beside the log, in <log>.head, replaced
// atomically under the log's lock after each append. Anyone who can write
// the log can write that file too, so record the head somewhere else as
// well (caddy apikey audit head prints it; GET /apikey/audit/head returns
// it) and check the log against it later (caddy apikey audit verify --head).
type Head struct {
	Lines  int64  `json:"lines"`
	SHA256 string `json:"sha256"`
	// Size is the log's length in bytes up to the head, so that a writer
	// can find the head without reading the whole log.
	Size int64 `json:"size,omitempty"`
}

// headFile is a head file's content: the head and the log's format (see
// FormatVersion); none is format 1.
type headFile struct {
	Head
	Version int64 `json:"version,omitempty"`
}

// String is the head as "<lines>:<sha256>", the form ParseHead reads.
func (h Head) String() string { return strconv.FormatInt(h.Lines, 10) + ":" + h.SHA256 }

// AnyLine is the Lines of a head known only by its hash: it may be at any
// line.
const AnyLine = -1

// ParseHead reads "<lines>:<sha256>", or a bare "<sha256>" (then Lines is
// AnyLine).
func ParseHead(s string) (Head, error) {
	s = strings.TrimSpace(s)
	h := Head{Lines: AnyLine, SHA256: s}
	if n, sum, ok := strings.Cut(s, ":"); ok {
		lines, err := strconv.ParseInt(n, 10, 64)
		if err != nil || lines < 0 {
			return Head{}, fmt.Errorf("head %q: want <lines>:<sha256> or <sha256>, as caddy apikey audit head prints it", s)
		}
		h = Head{Lines: lines, SHA256: sum}
	}
	if len(h.SHA256) != 64 || !isLowerHex(h.SHA256) {
		return Head{}, fmt.Errorf("head %q: the sha256 must be 64 lowercase hex digits", s)
	}
	return h, nil
}

func isLowerHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// HeadPath is the file beside the log where its writers record its head.
func HeadPath(log string) string { return flock.Resolve(log) + ".head" }

// readHeadFile reads the head recorded beside the log at path (already
// resolved). A missing or unreadable head file is an error.
func readHeadFile(path string) (Head, error) {
	data, err := capped.ReadFile("audit head file", path+".head", capped.Small)
	if err != nil {
		return Head{}, err
	}
	var file headFile
	if err := json.Unmarshal(data, &file); err != nil {
		return Head{}, fmt.Errorf("%s.head: %w", path, err)
	}
	if file.Version > FormatVersion {
		return Head{}, &NewerFormatError{HeadFile: path + ".head", Version: file.Version}
	}
	h := file.Head
	if h.Lines < 0 || h.Size < 0 || len(h.SHA256) != 64 || !isLowerHex(h.SHA256) || (h.Lines == 0) != (h.Size == 0) {
		return Head{}, fmt.Errorf("%s.head: not a head", path)
	}
	return h, nil
}

// writeHead replaces the head file beside the log at path (resolved), by
// rename, so that a reader sees the old head or the new one. It does not
// sync: the log is synced before, so after a crash the head on disk is this
// one, an older one, or unreadable, and each of those only means the next
// append or check finds it behind (or works it out again), never a false
// cut.
func writeHead(path string, h Head) error {
	data, err := json.Marshal(headFile{h, FormatVersion})
	if err != nil {
		return err
	}
	name := path + ".head"
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	atomicfile.MatchOwner(tmp, name)
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// HeadReport is an audit log's head as caddy apikey audit head --json and
// the admin API's GET /apikey/audit/head show it.
type HeadReport struct {
	// Path is the audit log's path.
	Path string `json:"path"`
	// Lines is the number of lines up to the head.
	Lines int64 `json:"lines"`
	// SHA256 is the hash of the line at the head.
	SHA256 string `json:"sha256"`
	// Head is "<lines>:<sha256>", for audit verify --head.
	Head string `json:"head"`
	// Recorded is false when no writer has recorded the head beside the
	// log yet, and it was worked out from the log.
	Recorded bool `json:"recorded"`
}

// ReportHead reads the head of the log at path (see ReadHead) as a
// HeadReport.
func ReportHead(path string) (HeadReport, error) {
	h, recorded, err := ReadHead(path)
	if err != nil {
		return HeadReport{}, err
	}
	return HeadReport{Path: path, Lines: h.Lines, SHA256: h.SHA256, Head: h.String(), Recorded: recorded}, nil
}

// ReadHead returns the head recorded beside the log at path. When there is
// no head file (no writer of this version has appended yet), it is worked
// out from the log itself, and recorded is false. A missing log has the
// empty head, 0 lines and the Genesis hash.
func ReadHead(path string) (h Head, recorded bool, err error) {
	path = flock.Resolve(path)
	if h, err := readHeadFile(path); err == nil {
		return h, true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Head{}, false, err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Head{SHA256: Genesis}, false, nil
	}
	if err != nil {
		return Head{}, false, err
	}
	defer f.Close()
	end, err := inspect(f, path)
	if err != nil {
		return Head{}, false, fmt.Errorf("audit log %s: %w", path, err)
	}
	h = Head{Lines: end.lines, SHA256: end.prev, Size: end.size}
	if end.torn != nil {
		h.Size -= end.torn.bytes
	}
	return h, false, nil
}

// Rotate moves the log at path and its head file aside, to
// <path>.<UTC time> and <path>.<UTC time>.head, under the log's lock, so
// that no writer appends in between; the next append starts a new log. It
// returns the new name of the old log and its head.
func Rotate(path string, now time.Time) (string, Head, error) {
	path = flock.Resolve(path)
	unlock, err := flock.Lock(path)
	if err != nil {
		return "", Head{}, fmt.Errorf("locking audit log %s: %w", path, err)
	}
	defer unlock()
	head, _, err := ReadHead(path)
	if err != nil {
		return "", Head{}, err
	}
	aside := path + "." + now.UTC().Format("20060102T150405Z")
	if _, err := os.Lstat(aside); err == nil {
		return "", Head{}, fmt.Errorf("%s already exists; try again in a second", aside)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", Head{}, err
	}
	if err := os.Rename(path+".head", aside+".head"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return aside, head, fmt.Errorf("the log was moved to %s, but its head file was not: %w", aside, err)
	}
	return aside, head, nil
}
