package local

import (
	"testing"

	"github.com/signet-dev/signet/backends"
)

// FuzzDirFromURI feeds arbitrary backend URIs to the reader of the local:
// scheme's directory: it refuses them or names a directory, and never
// drops part of the URI silently.
func FuzzDirFromURI(f *testing.F) {
	for _, s := range []string{"local://./signet-data", "local:relative/dir", "local:///absolute/dir", "local://", "local:",
		"local://./d?x=1", "local:///d#frag", "local://host:99/d", "local:%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, _, err := backends.ParseURI(raw)
		if err != nil || u.Scheme != Scheme {
			return
		}
		dir, err := dirFromURI(u)
		if err != nil {
			if backends.KindOf(err) != backends.KindInvalidArgument {
				t.Fatalf("%q: refused with %v, want InvalidArgument", raw, err)
			}
			return
		}
		if dir == "" || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("%q: directory %q, query %q and fragment %q", raw, dir, u.RawQuery, u.Fragment)
		}
	})
}
