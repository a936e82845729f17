//go:build unix

// Package flock takes exclusive locks that other processes respect, for
// files that are replaced by rename.
package flock

import (
	"os"
	"path/filepath"
	"syscall"
)

// Lock takes an exclusive lock for the file at path on a lock file beside
// it (the file itself is replaced by rename, so it cannot hold the lock). It
// waits for another holder to finish.
//
// A symbolic link is followed first (see Resolve), dangling or not: the lock
// belongs to the file a write replaces, so writers that name the link and
// writers that name its target wait for each other. A link swapped to another target while
// Lock waited is followed again.
//
// The folder is made if missing. The lock file is readable by all and opened
// read-only (flock needs no more), so that Caddy and an operator running the
// commands as another user can both take it.
func Lock(path string) (func(), error) {
	_, unlock, err := LockTarget(path)
	return unlock, err
}

// LockTarget is Lock, and also returns the file it locked (Resolve of path
// once the lock is held): the one to read and replace.
func LockTarget(path string) (string, func(), error) {
	for attempt := 0; ; attempt++ {
		target := Resolve(path)
		unlock, err := lockBeside(target)
		if err != nil || attempt == 3 || Resolve(path) == target {
			return target, unlock, err
		}
		unlock() // the link moved while we waited: lock its new target
	}
}

func lockBeside(path string) (func(), error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	lockPath := filepath.Join(dir, "."+filepath.Base(path)+".lock")
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
