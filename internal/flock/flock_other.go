//go:build !unix

package flock

import "sync"

var processLock sync.Mutex

// Lock serializes writers within this process only; on systems without
// flock, run one key-file writer at a time.
func Lock(string) (func(), error) {
	processLock.Lock()
	return processLock.Unlock, nil
}

// LockTarget is Lock, and also returns the file to read and replace: path
// with its symbolic links followed (see Resolve).
func LockTarget(path string) (string, func(), error) {
	unlock, err := Lock(path)
	return Resolve(path), unlock, err
}
