package command

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// gitObject is an object of a repository scan --git reads, and where it
// was first seen.
type gitObject struct {
	id     string
	commit string // the oldest commit that added the blob, or the commit itself
	path   string
}

// scanGit scans every commit, tag and blob reachable from any ref of the
// repository at repo, with the real git: "git rev-list --objects --all"
// lists them, "git log --raw" (oldest first) says in which commit and at
// which path each blob was first seen, "git cat-file" reads them. A key
// is reported once per path: where it first appeared there.
func (s *scanner) scanGit(repo string) error {
	if _, err := git(repo, nil, "rev-parse", "--git-dir"); err != nil {
		return fmt.Errorf("%s: %w", repo, err)
	}
	objects, err := gitObjects(repo)
	if err != nil {
		return err
	}
	sizes, err := gitSizes(repo, objects)
	if err != nil {
		return err
	}
	var toRead []gitObject
	for _, o := range objects {
		sz := sizes[o.id]
		if sz.typ == "tree" || sz.typ == "" {
			continue
		}
		if sz.size > s.maxSize {
			s.skip(o.where(), "larger than --max-size")
			continue
		}
		toRead = append(toRead, o)
	}
	seen := map[[2]string]bool{} // fingerprint, path
	return gitRead(repo, toRead, func(o gitObject, data []byte) {
		if binary(data) {
			s.skip(o.where(), "binary")
			return
		}
		s.report.Scanned++
		before := len(s.report.Findings)
		s.find(data, func(line int) scanFinding {
			return scanFinding{Repository: repo, Commit: o.commit, Path: o.path, Line: line}
		})
		// A key stays in a file across many commits, each a new blob:
		// keep the first (oldest) finding of each key at each path.
		kept := s.report.Findings[:before]
		for _, fd := range s.report.Findings[before:] {
			k := [2]string{fd.Fingerprint, fd.Path}
			if fd.Path != "" && seen[k] {
				continue
			}
			seen[k] = true
			kept = append(kept, fd)
		}
		s.report.Findings = kept
	})
}

func (o gitObject) where() string {
	if o.path == "" {
		return o.commit
	}
	return o.commit + ":" + o.path
}

// git runs git in repo, with stdin, and returns its output.
func git(repo string, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
	cmd.Stdin = stdin
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(errOut.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("git %s: %s", args[0], msg)
	}
	return out, nil
}

// gitObjects lists the objects reachable from every ref, blobs with the
// commit and path where each was first seen, oldest first.
func gitObjects(repo string) ([]gitObject, error) {
	log, err := git(repo, nil, "log", "--all", "--reverse", "--topo-order", "-m", "--root", "--raw",
		"--no-renames", "--no-abbrev", "--no-ext-diff", "--format=commit %H")
	if err != nil {
		return nil, err
	}
	var objects []gitObject
	index := map[string]int{}
	add := func(o gitObject) {
		if _, ok := index[o.id]; !ok {
			index[o.id] = len(objects)
			objects = append(objects, o)
		}
	}
	var commit string
	for line := range strings.Lines(string(log)) {
		line = strings.TrimSuffix(line, "\n")
		if rest, ok := strings.CutPrefix(line, "commit "); ok {
			commit, _, _ = strings.Cut(rest, " ")
			add(gitObject{id: commit, commit: commit})
			continue
		}
		// :100644 100644 <old> <new> M\t<path>
		meta, path, ok := strings.Cut(line, "\t")
		fields := strings.Fields(meta)
		if !ok || !strings.HasPrefix(line, ":") || len(fields) < 5 || strings.Trim(fields[3], "0") == "" || fields[1] == "160000" {
			continue
		}
		if unquoted, err := strconv.Unquote(path); err == nil && strings.HasPrefix(path, `"`) {
			path = unquoted
		}
		add(gitObject{id: fields[3], commit: commit, path: path})
	}
	// Whatever the log did not show (a tag's own text, a tag pointing at a
	// tree or a blob): rev-list --objects lists every object reachable.
	list, err := git(repo, nil, "rev-list", "--objects", "--all")
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(string(list)) {
		id, path, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch {
		case id == "":
		case path == "":
			add(gitObject{id: id, commit: id}) // a commit, a tag, or a root tree
		default:
			add(gitObject{id: id, path: path})
		}
	}
	return objects, nil
}

type gitSize struct {
	typ  string
	size int64
}

// gitSizes asks git cat-file the type and size of each object.
func gitSizes(repo string, objects []gitObject) (map[string]gitSize, error) {
	var in bytes.Buffer
	for _, o := range objects {
		in.WriteString(o.id + "\n")
	}
	out, err := git(repo, &in, "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)")
	if err != nil {
		return nil, err
	}
	sizes := make(map[string]gitSize, len(objects))
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // "<id> missing": a shallow or partial clone
		}
		n, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("git cat-file: size %q", f[2])
		}
		sizes[f[0]] = gitSize{typ: f[1], size: n}
	}
	return sizes, nil
}

// gitRead reads the objects with git cat-file --batch, one at a time, and
// calls fn with each.
func gitRead(repo string, objects []gitObject, fn func(gitObject, []byte)) error {
	cmd := exec.Command("git", "-C", repo, "cat-file", "--batch")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git cat-file: %w", err)
	}
	go func() {
		w := bufio.NewWriter(stdin)
		for _, o := range objects {
			w.WriteString(o.id + "\n")
		}
		w.Flush()
		stdin.Close()
	}()
	r := bufio.NewReaderSize(stdout, 64<<10)
	var readErr error
	for _, o := range objects {
		header, err := r.ReadString('\n')
		if err != nil {
			readErr = fmt.Errorf("git cat-file: %w", err)
			break
		}
		f := strings.Fields(header)
		if len(f) != 3 || f[0] != o.id {
			readErr = fmt.Errorf("git cat-file: unexpected answer %q for %s", strings.TrimSpace(header), o.id)
			break
		}
		n, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			readErr = fmt.Errorf("git cat-file: size %q", f[2])
			break
		}
		data := make([]byte, n+1) // the object and its newline
		if _, err := io.ReadFull(r, data); err != nil {
			readErr = fmt.Errorf("git cat-file: %w", err)
			break
		}
		fn(o, data[:n])
	}
	if readErr != nil {
		_ = cmd.Process.Kill()
	}
	_, _ = io.Copy(io.Discard, r)
	if err := cmd.Wait(); err != nil && readErr == nil {
		readErr = fmt.Errorf("git cat-file: %v: %s", err, strings.TrimSpace(errOut.String()))
	}
	return readErr
}
