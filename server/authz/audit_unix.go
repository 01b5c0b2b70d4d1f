//go:build unix

package authz

import (
	"os"
	"syscall"
)

// hasName reports whether f still has a directory entry (a link count
// above zero). One fstat(2).
func hasName(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || st.Nlink > 0
}
