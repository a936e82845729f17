package flock

import (
	"os"
	"path/filepath"
)

// maxHops bounds the symbolic links Resolve follows, as the kernel's
// ELOOP does (Linux allows 40).
const maxHops = 40

// Resolve returns the file that path names once every symbolic link in it
// is followed: the file a rename-based write replaces (as atomicfile does).
//
// A dangling link (one whose target does not exist yet) is followed too,
// link by link: a relative target is read from the link's folder. Writers
// that name the link, a second link to the same target or the target
// itself then all lock, read and write the same file, the target, which the
// first write creates; the links stay links. A missing file that is not a
// link is returned in its folder (with the folder's links followed), or as
// given when the folder is missing too: a write then creates it there.
// Links that go round in a loop, or more than maxHops of them, are returned
// as given: reading the file then fails ("too many levels of symbolic
// links"), so nothing is written.
func Resolve(path string) string {
	p := path
	for range maxHops {
		if target, err := filepath.EvalSymlinks(p); err == nil {
			return target
		}
		dir, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			return p // the folder is missing: the write makes it, and p in it
		}
		p = filepath.Join(dir, filepath.Base(p))
		target, err := os.Readlink(p)
		if err != nil {
			return p // not a link: a missing file, created here
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		p = target
	}
	return path
}
