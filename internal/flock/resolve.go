package flock

import "path/filepath"

// Resolve returns the file that path names once every symbolic link in it
// is followed: the file a rename-based write replaces (as atomicfile does).
// A path that does not resolve (missing, or a dangling link) is returned as
// it is, since a write then creates or replaces path itself.
func Resolve(path string) string {
	if target, err := filepath.EvalSymlinks(path); err == nil {
		return target
	}
	return path
}
