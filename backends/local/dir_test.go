package local

import (
	"os"
	"path/filepath"
	"testing"
)

// A key directory inside Go source code is where a test's keys end up
// committed: the store says so; one beside go.mod (make run's
// ./signet-data) or outside any module is fine.
func TestKeyDirectoryInsideGoSource(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for path, text := range map[string]string{"go.mod": "module x\n", "pkg/a.go": "package pkg\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, path)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, path), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for dir, want := range map[string]string{
		filepath.Join(root, "pkg", "keys"): filepath.Join(root, "pkg"),
		filepath.Join(root, "pkg"):         filepath.Join(root, "pkg"),
		filepath.Join(root, "signet-data"): "",
		t.TempDir():                        "",
	} {
		if got := insideGoPackage(dir); got != want {
			t.Errorf("insideGoPackage(%s) = %q, want %q", dir, got, want)
		}
	}
}
