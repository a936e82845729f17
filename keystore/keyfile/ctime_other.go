//go:build !(linux || openbsd || dragonfly || solaris || illumos || aix || darwin || freebsd || netbsd)

package keyfile

import (
	"os"
	"time"
)

// changeTime is zero where the system gives no change time (Windows, Plan
// 9, WebAssembly): there the watcher's slow content check (hashEvery) sees
// an edit that keeps the size and the modification time.
func changeTime(os.FileInfo) time.Time { return time.Time{} }
