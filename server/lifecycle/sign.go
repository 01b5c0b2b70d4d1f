package lifecycle

import (
	"context"
	"errors"
	"time"

	"github.com/signet-dev/signet/backends"
)

// ErrAllRevoked is in the error of Active (errors.Is) when no version signs
// because every one is revoked: only a Rotate helps, not waiting.
var ErrAllRevoked = errors.New("every version is revoked")

// ErrNoSigningVersion is in the error of Active (errors.Is) when no version
// of a ring may sign.
var ErrNoSigningVersion = errors.New("no version that may sign")

// ErrCARing is in the error of Active (errors.Is) on a CA ring.
var ErrCARing = errors.New("CA ring (usage: ca)")

// Active returns the version that signs now. With none (every version
// revoked), the error is KindUnavailable and says to rotate.
func (ks *KeySet) Active(r *Ring) (*Version, error) {
	if r.ca {
		return nil, backends.Errorf(backends.KindFailedPrecondition, "",
			"key ring %q is a %w: it issues certificates and never signs tokens", r.Name, ErrCARing)
	}
	if err := ks.notStarted(r); err != nil {
		return nil, err // never sign before the backend has been read and the key usage checked
	}
	s := ks.current(r)
	if s.active != nil {
		return s.active, nil
	}
	return nil, ks.noActive(r, s)
}

// noActive says why no version of the ring signs (errors.Is
// ErrNoSigningVersion): with x5c.required, none has the chain the ring
// requires; an emergency rotation's version waits for every replica to
// publish it; or none is enabled.
func (ks *KeySet) noActive(r *Ring, s *snapshot) error {
	for _, v := range s.versions {
		if v.Withheld {
			return backends.Errorf(backends.KindUnavailable, "",
				"key ring %q has %w: none has the certificate chain it requires (x5c.required): version %s: %s",
				r.Name, ErrNoSigningVersion, v.ID, ks.certProblem(r, v))
		}
	}
	for _, v := range s.versions {
		if !v.Disabled {
			return backends.Errorf(backends.KindUnavailable, "",
				"key ring %q has %w yet: the version of the emergency rotation signs from %s, once every replica publishes it "+
					"(2 × refresh_interval after its creation); retry then", r.Name, ErrNoSigningVersion, v.ActivatesAt.UTC().Format(time.RFC3339Nano))
		}
	}
	return backends.Errorf(backends.KindUnavailable, "", "key ring %q has %w: %w; Rotate it", r.Name, ErrNoSigningVersion, ErrAllRevoked)
}

// SignWith has the ring's backend sign input with version v, bounded by
// backend_timeout and ctx's deadline, and checks the signature's size.
func (ks *KeySet) SignWith(ctx context.Context, r *Ring, v *Version, input []byte) ([]byte, error) {
	bctx, cancel := ks.backendContext(ctx)
	sig, err := r.backend.Sign(bctx, r.key, v.ID, input)
	cancel()
	ks.observe(r, err)
	if backends.KindOf(err) == backends.KindFailedPrecondition && ks.revokedMeanwhile(ctx, r, v) {
		return nil, backends.Errorf(backends.KindUnavailable, "", "version %s of key ring %q was revoked by another replica after this one "+
			"last read the versions; it has read them again: retry", v.ID, r.Name)
	}
	if err != nil {
		return nil, err
	}
	if want := v.Algorithm.SignatureSize(); want != 0 && len(sig) != want {
		return nil, backends.Errorf(backends.KindUnknown, "", "backend returned a %d-byte %s signature, want %d", len(sig), v.Algorithm, want)
	}
	if r.verify {
		if err := v.Algorithm.Verify(v.PublicKey, input, sig); err != nil {
			err = backends.Errorf(backends.KindUnknown, "", "the backend signed with version %s of key ring %q but the signature "+
				"does not verify with that version's published key (kid %s): %v", v.ID, r.Name, v.Kid, err)
			ks.keyMismatch(r, &r.health.badSignature, err)
			return nil, err
		}
		ks.setHealth(r, &r.health.badSignature, nil) // a verified signature: the fault, if any, has passed
	}
	return sig, nil
}

// revokedMeanwhile re-reads the ring after the backend refused to sign with
// v, and reports whether v is disabled now: another replica revoked it (an
// emergency rotation) since this one last read the versions. The re-read
// keeps this replica from signing with v, and failing, until its next
// refresh.
func (ks *KeySet) revokedMeanwhile(ctx context.Context, r *Ring, v *Version) bool {
	if v.Disabled || ks.Refresh(ctx, r) != nil {
		return false
	}
	nv := find(ks.current(r).versions, v.ID)
	// Gone from a read that succeeded: the backend confirmed that it can
	// never sign again (checkKeysUnchanged), a revocation too.
	return nv == nil || nv.Disabled
}
