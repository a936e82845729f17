// Package atomicfile replaces files so that a crash leaves the old version
// or the new one, never half of one.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// WriteFile writes data to a temporary file beside path, syncs it, renames
// it over path, and syncs the folder. The folder is made if missing. A path
// that is a symbolic link has its target replaced, not the link. The new
// file keeps the old one's owner and group (or, for a new file, takes the
// folder's), so that a change made by root stays readable by the server.
func WriteFile(path string, data []byte, mode fs.FileMode) error {
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	matchOwner(tmp, path, dir)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// SetAside renames a file that cannot be trusted out of the way, keeping it
// for a person to look at, and returns its new name.
func SetAside(path string, now time.Time) (string, error) {
	aside := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	return aside, os.Rename(path, aside)
}

// MatchOwner gives a file just created at path the owner and group of its
// folder, as WriteFile does for new files (only when run as root).
func MatchOwner(f *os.File, path string) {
	matchOwner(f, path+".does-not-exist", filepath.Dir(path))
}
