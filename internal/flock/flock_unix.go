//go:build unix

// Package flock takes exclusive locks that other processes respect, for
// files that are replaced by rename.
package flock

import (
	"os"
	"path/filepath"
	"syscall"
)

// Lock takes an exclusive lock for path on a lock file beside it (the
// key file itself is replaced by rename, so it cannot hold the lock). It
// waits for another holder to finish.
//
// The folder is made if missing. The lock file is readable by all and opened
// read-only (flock needs no more), so that Caddy and an operator running the
// commands as another user can both take it.
func Lock(path string) (unlock func(), err error) {
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
