package pkcs11

import (
	"testing"

	"github.com/signet-dev/signet/backends"
)

// A URI whose attributes name no token and no slot is refused: a bare
// attribute name or an empty label is not a token to pick.
func TestParseURIRefusesAttributesWithoutAValue(t *testing.T) {
	for _, raw := range []string{
		"pkcs11:token?module-path=/m.so",
		"pkCs11:token?module-path=0",
		"pkcs11:token=?module-path=/m.so",
		"pkcs11:slot-id?module-path=/m.so",
	} {
		u, _, err := backends.ParseURI(raw)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if o, err := parseURI(u); backends.KindOf(err) != backends.KindInvalidArgument {
			t.Errorf("%q: got %+v, %v; want InvalidArgument", raw, o, err)
		}
	}
	u, _, err := backends.ParseURI("pkcs11:token=signet?module-path=/m.so")
	if err != nil {
		t.Fatal(err)
	}
	if o, err := parseURI(u); err != nil || o.token != "signet" {
		t.Fatalf("a token label: %+v, %v", o, err)
	}
}
