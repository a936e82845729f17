//go:build linux || openbsd || dragonfly || solaris || illumos || aix

package keyfile

import (
	"os"
	"syscall"
	"time"
)

// changeTime is the inode's change time (ctime): set by the system on every
// write, chmod or rename, and never to a time a program chooses, so that an
// in-place edit that keeps the size and puts the modification time back
// still changes it. Zero where the system does not give it.
func changeTime(info os.FileInfo) time.Time {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))
	}
	return time.Time{}
}
