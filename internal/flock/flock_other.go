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
