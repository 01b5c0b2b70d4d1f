package pkcs11

import (
	"strings"
	"testing"

	"github.com/signet-dev/signet/backends"
)

// FuzzParseURI feeds arbitrary backend URIs to the parser of the pkcs11:
// scheme's attributes and options, which loads no module and reads no
// PIN: it refuses them or returns options Open can use as they are. It
// needs neither cgo nor the pkcs11 build tag.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=signet?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/signet/pin",
		"pkcs11:slot-id=0?module-path=/opt/hsm/lib/libcs_pkcs11.so",
		"pkcs11:token=my%20token;slot-id=7?module-path=/m.so&pin-source=env:HSM_PIN&sessions=8",
		"pkcs11:token=signet?module-path=/m.so&pin=1234", "pkcs11:token=%zz?module-path=/m.so",
		"pkcs11:slot-id=x?module-path=/m.so", "pkcs11:?module-path=/m.so", "pkcs11:token=a?module-path=/m.so&pin-source=ftp:x",
		"pkcs11:token=a?module-path=/m.so&sessions=0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, _, err := backends.ParseURI(raw)
		if err != nil || u.Scheme != Scheme {
			return
		}
		o, err := parseURI(u)
		if err != nil {
			if backends.KindOf(err) != backends.KindInvalidArgument {
				t.Fatalf("%q: refused with %v, want InvalidArgument", raw, err)
			}
			return
		}
		if o.modulePath == "" || o.sessions < 0 || o.sessions > 10000 {
			t.Fatalf("%q: module %q, %d sessions", raw, o.modulePath, o.sessions)
		}
		if !strings.HasPrefix(o.pinSource, "file:") && !strings.HasPrefix(o.pinSource, "env:") ||
			o.pinSource == "file:" || o.pinSource == "env:" {
			t.Fatalf("%q: pin-source %q", raw, o.pinSource)
		}
		if !o.bySlot && !strings.Contains(u.Opaque, "token=") {
			t.Fatalf("%q: neither a slot nor a token", raw)
		}
	})
}
