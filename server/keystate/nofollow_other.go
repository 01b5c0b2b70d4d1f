//go:build !unix

package keystate

// noFollow: no O_NOFOLLOW here; Load's regular-file check still refuses
// what is not a file.
const noFollow = 0
