package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/moodmnky/caddy-apikey/internal/flock"
)

// FileResult is what CheckFiles found in one file.
type FileResult struct {
	Path string
	Result
	// Recorded is the head recorded beside the file (<file>.head), which
	// was found in it; nil when there is none.
	Recorded *Head
}

// ChainResult is what CheckFiles found in a log and the files rolled from
// it.
type ChainResult struct {
	// Files are the files checked, oldest first; the last is the log.
	Files []FileResult
	// Gone names the file the oldest one continues, when it is no longer
	// there (deleted past roll_keep, or by hand): the chain is checked
	// from the oldest file kept.
	Gone string
}

// maxChainFiles bounds the files CheckFiles follows back.
const maxChainFiles = 100000

// CheckFiles checks the log at path and the files rolled from it (see
// Roll): it follows the audit.continued entries back to the oldest file
// kept, checks each file's chain and that each continues the one before it
// exactly (its head), and that every rolled file of the log is in that
// chain. The head recorded beside each file must be in it. Each of heads
// must be in one of the files; with no rolled file, it is checked as
// Check does.
func CheckFiles(path string, heads ...Head) (ChainResult, error) {
	var res ChainResult
	path = flock.Resolve(path)
	files := []string{path}
	for cur := path; ; {
		prevPath, _, ok, err := continued(cur)
		if err != nil {
			return res, fmt.Errorf("%s: %w", cur, err)
		}
		if !ok {
			break
		}
		if _, err := os.Lstat(prevPath); errors.Is(err, fs.ErrNotExist) {
			res.Gone = prevPath
			break
		}
		if len(files) >= maxChainFiles || prevPath == path {
			return res, fmt.Errorf("%s: the files continue one another in a loop, or past %d files", cur, maxChainFiles)
		}
		files = append([]string{prevPath}, files...)
		cur = prevPath
	}
	inChain := map[string]bool{}
	for _, f := range files {
		inChain[f] = true
	}
	rolled, err := rolledFiles(path)
	if err != nil {
		return res, err
	}
	for _, name := range rolled {
		if !inChain[name] {
			return res, fmt.Errorf("%s: a file rolled from this log, but not in its chain: a file after it was removed or replaced", name)
		}
	}

	found := make([]bool, len(heads))
	var after *Head
	for i, name := range files {
		var strict, loose []Head
		var recorded *Head
		if h, err := readHeadFile(name); err == nil {
			strict, recorded = append(strict, h), &h
		} else if !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
		if len(files) == 1 {
			strict = append(strict, heads...)
		} else {
			loose = heads
		}
		f, err := os.Open(name)
		if err != nil {
			return res, err
		}
		r, err := check(f, after, strict, loose)
		f.Close()
		if err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
		if i == 0 && r.Continues != nil && res.Gone == "" {
			return res, fmt.Errorf("%s: continues a file that is not there", name)
		}
		for j, ok := range r.looseFound {
			found[j] = found[j] || ok
		}
		res.Files = append(res.Files, FileResult{Path: name, Result: r, Recorded: recorded})
		after = &r.Head
	}
	if len(files) > 1 {
		for i, h := range heads {
			switch {
			case found[i]:
			case h.Lines == AnyLine:
				return res, fmt.Errorf("no line of the log or its rolled files has the recorded head's sha256 %s: lines were cut before it, or changed, or the file holding it was removed", h.SHA256)
			default:
				return res, fmt.Errorf("the recorded head %s is in neither the log nor its rolled files: lines were cut, or the file holding it was removed", h)
			}
		}
	}
	return res, nil
}
