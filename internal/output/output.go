// Package output collects what a child process writes while a test reads
// it: the Vault server the tests start, the signet binary they run.
package output

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that is safe to read from while it is written to.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
