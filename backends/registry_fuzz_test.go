package backends

import (
	"context"
	"net/url"
	"slices"
	"sync"
	"testing"
)

var registerFuzzScheme sync.Once

// FuzzParseURI feeds arbitrary backend URIs, as a config file gives them,
// to ParseURI: it refuses them or returns the URI of a registered scheme
// with that scheme's opener, never panics. (Each backend fuzzes the
// parsing of its own options: FuzzParseURI in vault, awskms, pkcs11,
// gcpkms and azurekv,
// FuzzDirFromURI in local.)
func FuzzParseURI(f *testing.F) {
	registerFuzzScheme.Do(func() {
		Register("fuzz", func(context.Context, *url.URL, OpenOptions) (Signer, error) {
			return nil, Errorf(KindUnimplemented, "fuzz", "a scheme for the fuzz test only")
		})
	})
	for _, s := range []string{"fuzz://./signet-data", "fuzz:relative/dir", "fuzz:///absolute?x=1#f", "fuzz:?region=eu-west-1",
		"fuzz:token=signet?module-path=/m.so", "vault://127.0.0.1:8200/transit", "./signet-data", "", ":", "%zz:x", "FUZZ://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, open, err := ParseURI(raw)
		if err != nil {
			if u != nil || open != nil {
				t.Fatalf("%q: an error and a URI", raw)
			}
			return
		}
		if open == nil || !slices.Contains(Schemes(), u.Scheme) {
			t.Fatalf("%q: accepted scheme %q (registered: %v)", raw, u.Scheme, Schemes())
		}
	})
}
