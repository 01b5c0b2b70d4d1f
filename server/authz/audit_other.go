//go:build !unix

package authz

import "os"

// hasName: without a link count, only a failing fstat says the file is gone.
func hasName(f *os.File) bool {
	_, err := f.Stat()
	return err == nil
}
