//go:build darwin || freebsd || netbsd

package keyfile

import (
	"os"
	"syscall"
	"time"
)

// changeTime is the inode's change time (ctime): see ctime_ctim.go.
func changeTime(info os.FileInfo) time.Time {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return time.Unix(int64(st.Ctimespec.Sec), int64(st.Ctimespec.Nsec))
	}
	return time.Time{}
}
