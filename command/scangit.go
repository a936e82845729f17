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
	ref    string // else the ref that reaches it (refs/tags/v2)
	object string // else its own id
	path   string
}

// scanGit scans every commit, tag and blob reachable from any ref of the
// repository at repo, and every path and ref name, with the real git:
// "git log --raw" (oldest first) says in which commit and at which path
// each blob was first seen, "git for-each-ref" names the tags, trees and
// blobs refs reach other than through commits, "git rev-list --objects
// --all" lists any object left, "git cat-file" reads them. A key is
// reported once per path: where it first appeared there.
func (s *scanner) scanGit(repo string) error {
	if _, err := git(repo, nil, "rev-parse", "--git-dir"); err != nil {
		return fmt.Errorf("%s: %w", repo, err)
	}
	seen := map[[3]string]bool{} // fingerprint, where, in a name or a text
	// keep keeps the first (oldest) finding of each key at each path, of
	// those added since before: a key stays in a file across many
	// commits, each a new blob, and in a path across them all.
	keep := func(before int) {
		kept := s.report.Findings[:before]
		for _, fd := range s.report.Findings[before:] {
			k := [3]string{fd.Fingerprint, fd.Ref + ":" + fd.Path, strconv.FormatBool(fd.InName)}
			if (fd.Path != "" || fd.InName) && seen[k] {
				continue
			}
			seen[k] = true
			kept = append(kept, fd)
		}
		s.report.Findings = kept
	}
	objects, err := gitObjects(repo, func(o gitObject, name string) {
		before := len(s.report.Findings)
		s.findInName(name, func(end int) scanFinding {
			fd := scanFinding{Repository: repo, Commit: o.commit, Ref: o.ref, Object: o.object, Path: name[:end]}
			if o.path == "" { // a ref's name
				fd.Ref, fd.Path = name[:end], ""
			}
			return fd
		})
		keep(before)
	})
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
	return gitRead(repo, toRead, func(o gitObject, data []byte) {
		if binary(data) {
			s.skip(o.where(), "binary")
			return
		}
		s.report.Scanned++
		before := len(s.report.Findings)
		s.find(data, func(line int) scanFinding {
			return scanFinding{Repository: repo, Commit: o.commit, Ref: o.ref, Object: o.object, Path: o.path, Line: line}
		})
		keep(before)
	})
}

func (o gitObject) where() string {
	at := o.commit
	switch {
	case at == "" && o.ref != "":
		at = o.ref
	case at == "":
		at = "object " + o.object
	}
	if o.path == "" {
		return at
	}
	return at + ":" + o.path
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
// commit and path where each was first seen, oldest first. It calls named
// with each path seen in a commit or a tree a ref reaches, and with each
// ref's name.
func gitObjects(repo string, named func(o gitObject, name string)) ([]gitObject, error) {
	log, err := git(repo, nil, "log", "--all", "--reverse", "--topo-order", "-m", "--root", "--raw",
		"--no-renames", "--no-abbrev", "--no-ext-diff", "--format=commit %H")
	if err != nil {
		return nil, err
	}
	var objects []gitObject
	index := map[string]int{}
	add := func(o gitObject) bool {
		if _, ok := index[o.id]; ok {
			return false
		}
		index[o.id] = len(objects)
		objects = append(objects, o)
		return true
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
		if !ok || !strings.HasPrefix(line, ":") || len(fields) < 5 || strings.Trim(fields[3], "0") == "" {
			continue
		}
		if unquoted, err := strconv.Unquote(path); err == nil && strings.HasPrefix(path, `"`) {
			path = unquoted
		}
		o := gitObject{id: fields[3], commit: commit, path: path}
		named(o, path) // every path, even of a blob seen before (a rename) or a submodule
		if fields[1] != "160000" {
			add(o)
		}
	}
	if err := gitRefObjects(repo, add, named); err != nil {
		return nil, err
	}
	// Whatever else there is: rev-list --objects lists every object
	// reachable, named by its id.
	list, err := git(repo, nil, "rev-list", "--objects", "--all")
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(string(list)) {
		id, path, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if id != "" {
			add(gitObject{id: id, object: id, path: path})
		}
	}
	return objects, nil
}

// gitRefObjects adds the objects refs reach other than through commits,
// each named by the ref: an annotated tag's own object (and the tags it
// points at), a blob a tag or a ref points at, and the blobs of a tree one
// points at, with their paths. It calls named with each ref's name and
// each such path.
func gitRefObjects(repo string, add func(gitObject) bool, named func(gitObject, string)) error {
	refs, err := git(repo, nil, "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)")
	if err != nil {
		return err
	}
	type target struct{ id, typ, ref string }
	var todo []target
	for line := range strings.Lines(string(refs)) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 3)
		if len(f) != 3 {
			continue
		}
		named(gitObject{ref: f[2]}, f[2])
		if f[1] != "commit" { // a commit's objects are the log's
			todo = append(todo, target{f[0], f[1], f[2]})
		}
	}
	for len(todo) > 0 {
		var tags []gitObject
		for _, t := range todo {
			o := gitObject{id: t.id, ref: t.ref}
			switch t.typ {
			case "tag":
				if add(o) {
					tags = append(tags, o)
				}
			case "blob":
				add(o)
			case "tree":
				if add(o) {
					if err := gitTree(repo, o, add, named); err != nil {
						return err
					}
				}
			}
		}
		// What each tag points at: its first lines, "object <id>" and
		// "type <type>"; a tag pointing at a commit adds nothing more.
		todo = nil
		if len(tags) == 0 {
			break
		}
		if err := gitRead(repo, tags, func(o gitObject, data []byte) {
			var t target
			for line := range strings.Lines(string(data)) {
				if line == "\n" {
					break
				}
				k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
				switch k {
				case "object":
					t.id = v
				case "type":
					t.typ = v
				}
			}
			if t.id != "" && t.typ != "commit" {
				t.ref = o.ref
				todo = append(todo, t)
			}
		}); err != nil {
			return err
		}
	}
	return nil
}

// gitTree adds the blobs of the tree a ref reaches, with their paths.
func gitTree(repo string, tree gitObject, add func(gitObject) bool, named func(gitObject, string)) error {
	out, err := git(repo, nil, "ls-tree", "-r", "-z", "--full-tree", tree.id)
	if err != nil {
		return err
	}
	for _, entry := range strings.Split(string(out), "\x00") {
		// <mode> <type> <id>\t<path>
		meta, path, ok := strings.Cut(entry, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 3 {
			continue
		}
		o := gitObject{id: f[2], ref: tree.ref, path: path}
		named(o, path)
		if f[1] == "blob" {
			add(o)
		}
	}
	return nil
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
