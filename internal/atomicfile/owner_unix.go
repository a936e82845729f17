//go:build unix

package atomicfile

import (
	"os"
	"syscall"
)

// matchOwner gives f the owner and group of the file at path, or of the
// folder when there is no such file. Only root may give a file away; for
// anyone else this does nothing, which is right: their files are theirs.
func matchOwner(f *os.File, path, dir string) {
	info, err := os.Stat(path)
	if err != nil {
		if info, err = os.Stat(dir); err != nil {
			return
		}
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
}
