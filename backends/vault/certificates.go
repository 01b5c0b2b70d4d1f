package vault

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"

	"github.com/hashicorp/vault/api"

	"github.com/signet-dev/signet/backends"
)

// Certificate chains live in Transit itself: keys/NAME/set-certificate
// stores a PEM chain per key version (Vault 1.15 and later; Vault checks
// that the first certificate is a leaf for that version's key), and every
// read of the key returns it as the version's certificate_chain.
//
// Transit has no compare-and-set for it: PutCertificates reads the chain
// first and writes only if it is still the one the caller knew, but two
// replicas racing in the same moment may both write. The last write is the
// one Vault keeps; every replica publishes what it reads back, so they
// agree again by their next refresh (refresh_interval), with valid chains
// for the same key in the meantime.
//
// set-certificate refuses a CA certificate in first position, so a CA ring
// (usage: ca) cannot keep its certificate in Transit: PutCertificates says
// KindUnimplemented, and startup is refused.

var _ backends.CertificateStore = (*Backend)(nil)

// PutCertificates stores chain as the version's certificate chain if the
// chain stored now is old, and returns the chain Vault holds afterwards.
func (b *Backend) PutCertificates(ctx context.Context, ring backends.KeyRing, versionID string, old, chain [][]byte) ([][]byte, error) {
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	if len(chain) == 0 {
		return nil, errorf(backends.KindInvalidArgument, "an empty certificate chain")
	}
	if c, err := x509.ParseCertificate(chain[0]); err != nil {
		return nil, errorf(backends.KindInvalidArgument, "certificate chain: %v", err)
	} else if c.IsCA {
		return nil, errorf(backends.KindUnimplemented, "Transit's set-certificate stores leaf certificates only: "+
			"a CA ring (usage: ca) cannot keep its CA certificate in Vault Transit; put the CA ring on another backend")
	}
	n, err := strconv.Atoi(versionID)
	if err != nil || n < 1 {
		return nil, errorf(backends.KindNotFound, "Transit key %q has no version %q", b.keyName(ring), versionID)
	}
	cur, err := b.chainOf(ctx, ring, versionID)
	if errors.Is(err, errBadChain) {
		cur, err = nil, nil // unreadable: as good as none, and replaced like none
	}
	if err != nil || !backends.SameChain(cur, old) {
		return cur, err
	}
	name := b.keyName(ring)
	_, err = b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().WriteWithContext(ctx, b.path("keys", name, "set-certificate"),
			map[string]any{"version": n, "certificate_chain": string(backends.EncodePEMChain(chain))})
	})
	if err != nil {
		return nil, b.classify(err, "storing the certificate chain of version %d of Transit key %q", n, name)
	}
	return b.chainOf(ctx, ring, versionID)
}

// chainOf reads the chain Transit holds for a version.
func (b *Backend) chainOf(ctx context.Context, ring backends.KeyRing, versionID string) ([][]byte, error) {
	k, err := b.readKey(ctx, ring)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, errorf(backends.KindNotFound, "Transit key %q does not exist", b.keyName(ring))
	}
	e, ok := k.Keys[versionID]
	if !ok {
		return nil, errorf(backends.KindNotFound, "Transit key %q has no version %s", b.keyName(ring), versionID)
	}
	return decodeChain(b.keyName(ring), versionID, e.CertificateChain)
}

// errBadChain is in the error of a certificate chain Transit holds that
// does not decode as PEM certificates.
var errBadChain = errors.New("not a PEM certificate chain")

func decodeChain(name, versionID, s string) ([][]byte, error) {
	chain, err := backends.DecodePEMChain([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("the certificate chain of version %s of Transit key %q: %w: %v", versionID, name, errBadChain, err)
	}
	return chain, nil
}
