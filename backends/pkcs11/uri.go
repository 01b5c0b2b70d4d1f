package pkcs11

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/signet-dev/signet/backends"
)

// uriOptions is what a pkcs11: URI (RFC 7512) says, read without loading
// the module or reading the PIN. It builds without cgo, so that it can be
// fuzzed anywhere.
type uriOptions struct {
	token      string // the token's label, or "" to pick it by slot
	slotID     uint64
	bySlot     bool // slot-id= was given; it wins over token=
	modulePath string
	pinSource  string // file:PATH or env:VAR
	sessions   int    // the session pool's size; 0: the default
}

// parseURI reads a pkcs11: URI's path attributes (token, slot-id) and query
// options (module-path, pin-source, sessions).
func parseURI(u *url.URL) (uriOptions, error) {
	bad := func(format string, args ...any) (uriOptions, error) {
		return uriOptions{}, backends.Errorf(backends.KindInvalidArgument, Scheme, format, args...)
	}
	var o uriOptions
	hasToken := false
	for _, part := range strings.Split(u.Opaque, ";") {
		if part == "" {
			continue
		}
		// RFC 7512: an attribute is name=value. A bare name is refused
		// rather than read as an empty value: "pkcs11:token" would
		// otherwise name no token and no slot.
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return bad("URI attribute %q has no value (want token=LABEL or slot-id=N)", k)
		}
		v, err := url.PathUnescape(v)
		if err != nil {
			return bad("URI attribute %s: %v", k, err)
		}
		switch k {
		case "token":
			if v == "" {
				return bad("token= needs the token's label")
			}
			o.token, hasToken = v, true
		case "slot-id":
			if o.slotID, err = strconv.ParseUint(v, 10, 64); err != nil {
				return bad("slot-id %q is not a number", v)
			}
			o.bySlot = true
		default:
			return bad("unsupported URI attribute %q (use token or slot-id)", k)
		}
	}
	q, err := backends.ParseOptions(Scheme, u, "module-path", "pin-source", "sessions")
	if err != nil {
		return uriOptions{}, err
	}
	if o.modulePath = q.Get("module-path"); o.modulePath == "" {
		return bad("the URI needs module-path, e.g. pkcs11:token=signet?module-path=/usr/lib/softhsm/libsofthsm2.so")
	}
	if !o.bySlot && !hasToken {
		return bad("the URI names neither token= nor slot-id=")
	}
	if o.pinSource = q.Get("pin-source"); o.pinSource == "" {
		o.pinSource = "env:" + PINEnv
	}
	if kind, rest, _ := strings.Cut(o.pinSource, ":"); (kind != "file" && kind != "env") || rest == "" {
		return bad("pin-source must be file:PATH or env:VAR")
	}
	if o.sessions, err = q.Int("sessions", 0, 1, 10000); err != nil {
		return uriOptions{}, err
	}
	return o, nil
}
