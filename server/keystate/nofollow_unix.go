//go:build unix

package keystate

import "syscall"

// noFollow makes Load refuse a symbolic link in place of the file.
const noFollow = syscall.O_NOFOLLOW
