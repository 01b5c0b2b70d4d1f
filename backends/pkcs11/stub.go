//go:build !pkcs11 || !cgo

package pkcs11

import (
	"context"
	"net/url"

	"github.com/signet-dev/signet/backends"
)

func init() {
	backends.Register(Scheme, func(context.Context, *url.URL, backends.OpenOptions) (backends.Signer, error) {
		return nil, backends.Errorf(backends.KindUnimplemented, Scheme,
			"this signet was built without PKCS#11 support: build it with cgo and `-tags pkcs11` (make build does)")
	})
}
