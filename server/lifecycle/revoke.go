package lifecycle

import (
	"context"
	"fmt"
	"sync"

	"github.com/signet-dev/signet/backends"
)

// revokeParallel is how many DisableVersion calls a revocation has in
// flight at once on a backend that cannot revoke in one step: an
// emergency rotation of a ring with many versions (85 in the soak) takes
// a few round trips rather than one per version, without a burst that a
// KMS's request quota would refuse.
const revokeParallel = 8

// revokeOlder disables every enabled version of r older than created,
// from the ring's stored snapshot: in one call where the backend can
// (backends.PrefixDisabler), otherwise with DisableVersion, revokeParallel
// at a time. Each call is the backend's crash-safe, repeatable revocation,
// so an interrupted revokeOlder is finished by calling it again. It
// returns, oldest first, the versions it revoked (with replayed, those
// revoked before too) and the error of the oldest that failed, if any.
func (ks *KeySet) revokeOlder(ctx context.Context, r *Ring, created *Version, replayed bool) ([]*Version, error) {
	var older, enabled []*Version
	for _, v := range r.snap.load().versions {
		if v.ID == created.ID {
			break // versions are oldest first: the rest are newer
		}
		if !v.Disabled || replayed {
			older = append(older, v)
		}
		if !v.Disabled {
			enabled = append(enabled, v)
		}
	}
	failed := map[*Version]error{}
	if len(enabled) > 0 {
		failed = ks.disable(ctx, r, created, enabled)
	}
	var revoked []*Version
	var first error
	for _, v := range older {
		switch err := failed[v]; {
		case err == nil:
			revoked = append(revoked, v)
		case first == nil:
			first = err
		}
	}
	return revoked, first
}

// disable revokes the versions vs of r, all older than created, and
// returns the error of each that failed.
func (ks *KeySet) disable(ctx context.Context, r *Ring, created *Version, vs []*Version) map[*Version]error {
	failed := map[*Version]error{}
	if pd, ok := r.backend.(backends.PrefixDisabler); ok {
		bctx, cancel := ks.backendContext(ctx)
		err := pd.DisableVersionsBefore(bctx, r.key, created.ID)
		cancel()
		if backends.KindOf(err) != backends.KindUnimplemented { // Unimplemented: a wrapper's answer, not the backend's
			ks.observe(r, err)
			if err != nil {
				err = fmt.Errorf("created version %s but revoking the %d versions older than it failed "+
					"(call Rotate with revoke_previous again): %w", created.ID, len(vs), err)
				for _, v := range vs {
					failed[v] = err
				}
			}
			return failed
		}
	}
	errs := make([]error, len(vs))
	slots := make(chan struct{}, revokeParallel)
	var wg sync.WaitGroup
	for i, v := range vs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			bctx, cancel := ks.backendContext(ctx)
			errs[i] = r.backend.DisableVersion(bctx, r.key, v.ID)
			cancel()
			ks.observe(r, errs[i])
		})
	}
	wg.Wait()
	for i, v := range vs {
		if errs[i] != nil {
			failed[v] = fmt.Errorf("created version %s but revoking version %s failed (call Rotate with revoke_previous again): %w",
				created.ID, v.ID, errs[i])
		}
	}
	return failed
}
