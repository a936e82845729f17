package command

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Exit statuses of caddy apikey scan.
const (
	scanClean = 0 // no key found (with a store: no live key)
	scanFound = 1 // a live key found, or any key when no store is given
	scanUsage = 2 // the scan could not be done: a usage error, a path or a store that cannot be read, git failing
)

// defaultScanMaxSize is the largest file (or git blob) scan reads: keys
// live in text files of a few kilobytes; a larger file is a build output,
// a data set or an archive, and is skipped, saying so.
const defaultScanMaxSize = 10 << 20

// binarySniff is how much of a file scan looks at for a NUL byte, which
// makes it binary (git's own test), and skipped.
const binarySniff = 8000

func scanCommand() *cobra.Command {
	c := leaf("scan [paths...] [--git] [--keys <file> | --redis <address>] [--json] [--max-size <size>]",
		"Finds keys in files, folders and git history, and says which are live; never prints a key", cobra.ArbitraryArgs,
		func(c *cobra.Command, args []string) error {
			found, err := runScan(c, args)
			if err != nil {
				// A path may be a key pasted in the wrong place: errors
				// name paths, masked.
				fmt.Fprintln(os.Stderr, "Error:", keystore.MaskSecrets(err.Error()))
				os.Exit(scanUsage)
			}
			if found > 0 {
				// Cobra prints it; Caddy's main exits with status 1.
				return fmt.Errorf("%d live key(s) found: revoke or rotate them (caddy apikey revoke|rotate), then remove them", found)
			}
			return nil
		})
	c.Long = `Finds keys in the files under each path (default: the current folder), or
with --git in every commit, tag and blob reachable from every ref of each
git repository, read with git; and in the names of files and folders (with
--git: every path in history, and every ref's name). Only keys whose
checksum matches are reported, as file:line (or commit:path:line, or
ref:path:line for what a tag reaches other than through a commit; (name)
for the line of a key in a name), with the key's type and a fingerprint
(the first 12 hex digits of its hash); never the key or its hash. With a
store (--keys or --redis), each key is named by its record, with its
status.

.git folders, binary files and files larger than --max-size are skipped,
and each skip is said on stderr. Symbolic links are not followed; their
targets are read as text.

Exit status: 0 no live key found; 1 a live key found (without a store, any
key); 2 the scan could not be done (a usage error, a path or store that
cannot be read, git failing).`
	addStoreFlags(c)
	f := c.Flags()
	f.Bool("git", false, "scan every commit, tag and blob reachable from every ref of the git repositories named (default: the current folder's), instead of the files")
	f.Bool("json", false, "print the findings as JSON")
	f.String("max-size", humanize.IBytes(defaultScanMaxSize), "skip files and blobs larger than this")
	// A usage error is status 2, as the other errors that stop a scan:
	// status 1 is for keys found.
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		fmt.Fprintln(os.Stderr, "Error:", keystore.MaskSecrets(err.Error()))
		os.Exit(scanUsage)
		return err
	})
	return c
}

// scanFinding is one key scan found: where it is and what it is, never
// the key or its hash.
type scanFinding struct {
	// File is the file's path (files mode).
	File string `json:"file,omitempty"`
	// Repository, Commit and Path say where the key is in git history
	// (--git): the commit and path where the blob holding it was first
	// seen. Path is empty for a commit's or a tag's own text.
	Repository string `json:"repository,omitempty"`
	Commit     string `json:"commit,omitempty"`
	// Ref is set instead of Commit for an object a ref reaches other than
	// through a commit: an annotated tag's own text, a tree or a blob a
	// tag or a ref points at (refs/tags/v2). Object is set instead of
	// both for an object found with neither (its id).
	Ref    string `json:"ref,omitempty"`
	Object string `json:"object,omitempty"`
	Path   string `json:"path,omitempty"`
	// Line is the key's line; 0 for a key in a name.
	Line int `json:"line"`
	// InName is set for a key in a name, not in a text: a file's or a
	// folder's (File or Path ends with that name) or a ref's (Ref).
	InName bool `json:"in_name,omitempty"`
	// Type is dev or prod.
	Type string `json:"type"`
	// Fingerprint is the first 12 hex digits of the key's SHA-256, as in
	// its record's hash: enough to find the record, too few to stand for
	// the hash.
	Fingerprint string `json:"fingerprint"`
	// ID and Status are the record's, when a store is given and holds the
	// key; Status is "unknown" when the store does not.
	ID     string `json:"id,omitempty"`
	Status string `json:"status,omitempty"`
	// OldSecret is set when the key is a rotated-out secret of the record;
	// OldSecretValidUntil is when it stops (or stopped) being accepted.
	OldSecret           bool   `json:"old_secret,omitempty"`
	OldSecretValidUntil string `json:"old_secret_valid_until,omitempty"`
	// Live is whether the key is accepted (or, with no store, may be).
	Live bool `json:"live"`
}

// scanSkip is a file or blob scan did not read, and why.
type scanSkip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// scanReport is what scan --json prints.
type scanReport struct {
	Findings []scanFinding `json:"findings"`
	Skipped  []scanSkip    `json:"skipped"`
	// Scanned counts the files (or, with --git, the commits, tags and
	// blobs) read.
	Scanned int `json:"scanned"`
	// Live counts the findings that are live.
	Live int `json:"live"`
}

// scanner gathers findings, with the store's records to tell which keys
// are live.
type scanner struct {
	maxSize int64
	unit    string        // what Scanned counts: "file" or "git object"
	keys    *keystore.Set // nil without a store
	now     time.Time
	report  scanReport
}

// runScan scans the paths the command names and prints the findings; it
// returns how many are live. An error means the scan could not be done.
func runScan(c *cobra.Command, args []string) (int, error) {
	f := c.Flags()
	git, _ := f.GetBool("git")
	asJSON, _ := f.GetBool("json")
	sizeText, _ := f.GetString("max-size")
	maxSize, err := humanize.ParseBytes(sizeText)
	if err != nil || maxSize == 0 || maxSize > 1<<40 {
		return 0, fmt.Errorf("--max-size %q: give a size such as 10MiB", sizeText)
	}
	s := &scanner{maxSize: int64(maxSize), unit: "file", now: time.Now(), report: scanReport{Findings: []scanFinding{}, Skipped: []scanSkip{}}}
	keysFile, _ := f.GetString("keys")
	redis, _ := f.GetString("redis")
	if keysFile != "" || redis != "" {
		if err := withStore(c, s.loadKeys); err != nil {
			return 0, err
		}
	}
	if len(args) == 0 {
		args = []string{"."}
	}
	if git {
		s.unit = "git object"
	}
	for _, path := range args {
		if git {
			err = s.scanGit(path)
		} else {
			err = s.scanPath(path)
		}
		if err != nil {
			return 0, err
		}
	}
	for _, fd := range s.report.Findings {
		if fd.Live {
			s.report.Live++
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s.report); err != nil {
			return 0, err
		}
	} else {
		s.print(os.Stdout, os.Stderr)
	}
	return s.report.Live, nil
}

// loadKeys reads every record of the store, to look the keys found up.
func (s *scanner) loadKeys(store keystore.Store) error {
	var records []keystore.Record
	if err := eachRecord(context.Background(), store, "", func(rec keystore.Record) error {
		records = append(records, rec)
		return nil
	}); err != nil {
		return err
	}
	set, err := keystore.NewSet(records)
	if err != nil {
		return fmt.Errorf("%s: %w", store.Describe(), err)
	}
	s.keys = set
	return nil
}

// scanPath scans a file, or the files under a folder (not following
// symbolic links, and skipping .git folders).
func (s *scanner) scanPath(root string) error {
	info, err := os.Stat(root)
	if err != nil {
		return err
	}
	// The path named may hold a key (a pre-commit hook names the files
	// committed): every name in it is read.
	s.findInName(root, func(end int) scanFinding { return scanFinding{File: root[:end]} })
	if !info.IsDir() {
		s.scanFile(root, info)
		return nil
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if path != root {
			s.findInName(d.Name(), func(int) scanFinding { return scanFinding{File: path} })
		}
		if err != nil {
			if path == root {
				return err
			}
			s.skip(path, err.Error())
			return nil
		}
		switch {
		case d.IsDir():
			if d.Name() == ".git" && path != root {
				return filepath.SkipDir
			}
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			// Never followed; its target is its text (as git keeps it).
			if target, err := os.Readlink(path); err == nil {
				s.find([]byte(target), func(line int) scanFinding { return scanFinding{File: path, Line: line} })
			}
			return nil
		case !d.Type().IsRegular():
			return nil // devices, pipes: never read
		}
		info, err := d.Info()
		if err != nil {
			s.skip(path, err.Error())
			return nil
		}
		s.scanFile(path, info)
		return nil
	})
}

// scanFile scans one regular file, unless it is too large or binary.
func (s *scanner) scanFile(path string, info fs.FileInfo) {
	if !info.Mode().IsRegular() {
		s.skip(path, "not a regular file")
		return
	}
	if info.Size() > s.maxSize {
		s.skip(path, "larger than --max-size "+humanize.IBytes(uint64(s.maxSize)))
		return
	}
	f, err := os.Open(path)
	if err != nil {
		s.skip(path, err.Error())
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, s.maxSize+1))
	switch {
	case err != nil:
		s.skip(path, err.Error())
		return
	case int64(len(data)) > s.maxSize:
		s.skip(path, "larger than --max-size "+humanize.IBytes(uint64(s.maxSize)))
		return
	case binary(data):
		s.skip(path, "binary")
		return
	}
	s.report.Scanned++
	s.find(data, func(line int) scanFinding { return scanFinding{File: path, Line: line} })
}

// binary reports whether data looks binary: a NUL byte near its start.
func binary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), binarySniff)], 0) >= 0
}

func (s *scanner) skip(path, reason string) {
	s.report.Skipped = append(s.report.Skipped, scanSkip{Path: keystore.MaskSecrets(path), Reason: keystore.MaskSecrets(reason)})
}

// find adds a finding for each key in data (keystore.Find: the checksum
// is checked, so a string merely shaped like a key is never one); at
// makes the finding's location from the key's line.
func (s *scanner) find(data []byte, at func(line int) scanFinding) {
	line, last := 1, 0
	keystore.Find(data, func(off int, key string) bool {
		line += bytes.Count(data[last:off], []byte{'\n'})
		last = off
		s.add(at(line), key)
		return true
	})
}

// findInName adds a finding for each key in name, a path (a file's, a
// folder's, or in git a ref's); at makes the finding's location from end,
// where the path's part (between slashes) that holds the key ends.
func (s *scanner) findInName(name string, at func(end int) scanFinding) {
	keystore.Find([]byte(name), func(off int, key string) bool {
		end := len(name)
		if i := strings.IndexAny(name[off+len(key):], "/"+string(filepath.Separator)); i >= 0 {
			end = off + len(key) + i
		}
		fd := at(end)
		fd.InName = true
		s.add(fd, key)
		return true
	})
}

// add adds the finding of key, its names masked: a file named after a key
// (it happens) is named masked.
func (s *scanner) add(fd scanFinding, key string) {
	fd.File, fd.Path, fd.Ref, fd.Repository = keystore.MaskSecrets(fd.File), keystore.MaskSecrets(fd.Path), keystore.MaskSecrets(fd.Ref), keystore.MaskSecrets(fd.Repository)
	s.describe(&fd, key)
	s.report.Findings = append(s.report.Findings, fd)
}

// describe fills in what a finding says about its key: its type and
// fingerprint, and with a store its record, status and whether it is
// live.
func (s *scanner) describe(fd *scanFinding, key string) {
	typ, _ := keystore.Check(key)
	fd.Type = typ.String()
	sum := sha256.Sum256([]byte(key))
	fd.Fingerprint = hex.EncodeToString(sum[:6])
	if s.keys == nil {
		fd.Live = true
		return
	}
	m := s.keys.Lookup(keystore.Sum(key))
	if m.Key == nil {
		fd.Status = "unknown"
		return
	}
	fd.ID = m.Key.ID
	fd.Status = m.Key.Status(s.now)
	// Live unless it can never work again: a key waiting for approval
	// may, and counts. (Read from the key, not its status: a status
	// names one state when a key is in several.)
	fd.Live = !m.Key.Revoked && !m.Key.Expired(s.now)
	if m.Previous != nil {
		fd.OldSecret = true
		fd.OldSecretValidUntil = m.Previous.ValidUntil.UTC().Format(time.RFC3339)
		fd.Live = fd.Live && s.now.Before(m.Previous.ValidUntil)
	}
}

// print writes the findings one a line on out, and a summary and the
// files skipped on errOut.
func (s *scanner) print(out, errOut io.Writer) {
	for _, fd := range s.report.Findings {
		fmt.Fprintf(out, "%s: %s key, fingerprint %s%s\n", fd.location(), fd.Type, fd.Fingerprint, fd.verdict())
	}
	for _, sk := range s.report.Skipped {
		fmt.Fprintf(errOut, "skipped %s: %s\n", printable(sk.Path), printable(sk.Reason))
	}
	what := s.unit
	if s.report.Scanned != 1 {
		what += "s"
	}
	fmt.Fprintf(errOut, "Scanned %d %s (%d skipped): %d key(s) found, %d live.\n",
		s.report.Scanned, what, len(s.report.Skipped), len(s.report.Findings), s.report.Live)
}

// location is file:line, or commit:path:line (ref:path:line for what a
// ref reaches other than through a commit), with (name) for the line of a
// key in a name; printable on a terminal.
func (fd scanFinding) location() string {
	var loc string
	switch {
	case fd.File != "":
		loc = fd.File
	case fd.Commit != "":
		loc = fd.Commit[:min(len(fd.Commit), 12)]
	case fd.Ref != "":
		loc = fd.Ref
	default:
		loc = "object " + fd.Object[:min(len(fd.Object), 12)]
	}
	switch {
	case fd.File != "":
	case fd.Path != "":
		loc += ":" + fd.Path
	case !fd.InName: // a ref's name is the location itself
		loc += ":(object text)"
	}
	if fd.InName {
		loc += ":(name)"
	} else {
		loc += ":" + strconv.Itoa(fd.Line)
	}
	if fd.Repository != "" && fd.Repository != "." {
		loc = fd.Repository + "@" + loc
	}
	return printable(loc)
}

// verdict says what the store knows of the key.
func (fd scanFinding) verdict() string {
	id := printable(fd.ID)
	switch {
	case fd.Status == "":
		return " (no store given: treated as live)"
	case fd.ID == "":
		return ", not in the store"
	case fd.OldSecret && fd.Live:
		return fmt.Sprintf(", key %s (%s), an old secret still accepted until %s: LIVE", id, fd.Status, fd.OldSecretValidUntil)
	case fd.OldSecret:
		return fmt.Sprintf(", key %s (%s), an old secret no longer accepted (since %s)", id, fd.Status, fd.OldSecretValidUntil)
	case fd.Live:
		return fmt.Sprintf(", key %s (%s): LIVE", id, fd.Status)
	}
	return fmt.Sprintf(", key %s (%s)", id, fd.Status)
}
