package keystate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// FileName is the snapshot's file in state_dir.
const FileName = "keyset.json"

// File is the snapshot file in a directory. Save writes it atomically and
// only when its content changed; Load reads it strictly. Safe for
// concurrent use.
type File struct {
	dir  string
	mu   sync.Mutex
	last []byte // guarded by mu: what the file holds, as far as this process knows
}

// NewFile is the snapshot file in dir, which must exist (the chart's
// emptyDir; an operator's directory).
func NewFile(dir string) *File { return &File{dir: dir} }

// Path is the file's path.
func (f *File) Path() string { return filepath.Join(f.dir, FileName) }

// Load reads and decodes the file. A missing file is (nil, nil): a new
// replica has none. Any other problem is an error, and the file is not
// used: a file larger than MaxBytes, a symbolic link, one that others
// may write, or a document Decode refuses.
func (f *File) Load() ([]Ring, error) {
	fd, err := os.OpenFile(f.Path(), os.O_RDONLY|noFollow, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", f.Path())
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s may be written by others (mode %v): not trusted", f.Path(), st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(fd, MaxBytes+1))
	if err != nil {
		return nil, err
	}
	rings, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path(), err)
	}
	f.mu.Lock()
	f.last = data
	f.mu.Unlock()
	return rings, nil
}

// Save writes data as the file's content unless it holds it already: a
// temporary file in the same directory, owner-only, written and synced,
// renamed over the file, and the directory synced, so that a crash at any
// point leaves the old file or the new one, never a mix. It reports whether
// it wrote.
func (f *File) Save(data []byte) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last != nil && bytes.Equal(f.last, data) {
		return false, nil
	}
	tmp, err := os.CreateTemp(f.dir, "."+FileName+".*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing by that name
	// CreateTemp makes the file 0600 already; Chmod in case the umask or
	// the file system said otherwise.
	err = errors.Join(tmp.Chmod(0o600), writeAll(tmp, data), tmp.Sync())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), f.Path()); err != nil {
		return false, err
	}
	if err := syncDir(f.dir); err != nil {
		return false, err
	}
	f.last = bytes.Clone(data)
	return true, nil
}

func writeAll(w io.Writer, data []byte) error {
	_, err := w.Write(data)
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir) // #nosec G304 -- the configured state_dir, opened only to fsync the rename into it
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
